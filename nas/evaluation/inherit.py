"""Inherit: a trial's model built from a trained dense parent (Puzzle, PostNAS, Minitron style conversions).

`convert(parent, cfg)` returns a TransformerLM of `cfg` (the parent's sizes, a trial's knobs) whose weights come
from the parent:

- window / global tokens: the same weights under the new mask.
- dynamic gate: g_proj's weight zero and its bias set so the gates pass the parent's attention through. The gated
  kernel computes gate_local * softmax(window) + gate_global * softmax(first G keys). For a query whose global
  keys all lie outside its window, softmax over the union of both is exactly (1 - p) * local + p * global with p
  the union softmax's mass on the global keys; per layer and head, the global gate is set to the mean p the
  parent shows on `calibration` and the local gate to 1 - p (clamped to [GATE_EPS, 1 - GATE_EPS]). Not exact:
  p varies by query and the gate here is constant until trained; queries within W + G of the start see global
  keys in both branches; without global tokens the local gate is 1 - GATE_EPS, not 1.
- GQA and QKV sharing: K and V (and Q for qkv) mean-pooled over the heads of each group (Ainslie et al. 2023's
  uptraining recipe); exact when the parent's heads are already equal within groups.
- layer sharing: each unique layer is the mean of the parent layers tied to it (norms included); exact when they
  are already equal.
- ffn_block_diag: every layer keeps its own off-diagonal sub-blocks; the diagonal sub-blocks a layer pair shares
  are the mean of the pair's (the parent's own when they are already equal).
- precision: the same fp32 master weights, computed in the new formats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nas.knobs import SIZE_FIELDS
from nas.model import ArchConfig, TransformerLM
from nas.model.sharing import sublayer_maps
from nas.model.transformer import apply_rope, rope_tables

GATE_EPS = 1e-3  # the gates' pass-through init stays this far from 0 and 1 (sigmoid bias within +-6.9)


def parent_arch(cfg: ArchConfig) -> ArchConfig:
    """The dense parent of a configuration: its sizes, every knob at its default (dense, MHA, no sharing, fp32)."""
    return ArchConfig.from_dict({k: getattr(cfg, k) for k in SIZE_FIELDS})


def _check_parent(parent: TransformerLM, cfg: ArchConfig) -> None:
    dense = parent_arch(parent.cfg)
    if parent.cfg.to_dict() != dense.to_dict():
        raise ValueError("the parent must be a dense model (attention=dense, kv_heads=None, sharing=none, fp32)")
    if dense.to_dict() != parent_arch(cfg).to_dict():
        diff = sorted(k for k in SIZE_FIELDS if getattr(cfg, k) != getattr(dense, k))
        raise ValueError(f"the trial's sizes differ from the parent's ({', '.join(diff)}): "
                         "convert at the parent's size")


def _pool(w: Tensor, heads: int, groups: int) -> Tensor:
    """Rows of (heads * hd, d) mean-pooled over the heads of each group (consecutive heads: repeat_interleave)."""
    hd = w.shape[0] // heads
    return w.view(groups, heads // groups, hd, -1).mean(1).reshape(groups * hd, -1)


def _attention_weights(parent: TransformerLM, layer: int, cfg: ArchConfig) -> dict[str, Tensor]:
    """One parent layer's attention tensors in the trial's head grouping (no gate)."""
    a = parent.attns[layer]
    H, hd = cfg.n_heads, cfg.hd
    q, k, v = a.wqkv.weight.detach().split(H * hd)
    if cfg.group_share == "qkv":
        q = _pool(q, H, cfg.n_kv)
    return {"norm.weight": a.norm.weight.detach(),
            "wqkv.weight": torch.cat([q, _pool(k, H, cfg.n_kv), _pool(v, H, cfg.n_kv)]),
            "wo.weight": a.wo.weight.detach()}


def _blocks(w: Tensor, k: int) -> Tensor:
    """(out, in) -> (k, k, out/k, in/k): sub-block [r, c] of a k x k tiling."""
    out, inp = w.shape
    return w.view(k, out // k, k, inp // k).permute(0, 2, 1, 3)


def _mean(tensors: list[Tensor]) -> Tensor:
    return torch.stack(tensors).mean(0)


def _state(parent: TransformerLM, child: TransformerLM, cfg: ArchConfig) -> dict[str, Tensor]:
    """The child's state dict from the parent's weights (gates left at the child's own init)."""
    state = {k: v.detach().clone() for k, v in child.state_dict().items()}
    for key in ("tok_emb.weight", "norm.weight", "pos_emb.weight", "lm_head"):
        if key in state:
            state[key] = parent.state_dict()[key].detach().clone()
    attn_map, ffn_map = sublayer_maps(cfg)
    for unique in range(max(attn_map) + 1):
        tied = [_attention_weights(parent, i, cfg) for i, m in enumerate(attn_map) if m == unique]
        for name in tied[0]:
            state[f"attns.{unique}.{name}"] = _mean([t[name] for t in tied])
    if cfg.sharing != "ffn_block_diag":
        for unique in range(max(ffn_map) + 1):
            ffns = [parent.ffns[i].state_dict() for i, m in enumerate(ffn_map) if m == unique]
            for name in ("norm.weight", "fc1_weight", "fc2_weight"):
                state[f"ffns.{unique}.{name}"] = _mean([f[name].detach() for f in ffns])
        return state
    k = cfg.ffn_blocks
    assert k is not None, "ArchConfig sets ffn_blocks for sharing=ffn_block_diag"
    off = [(r, c) for r in range(k) for c in range(k) if r != c]  # BlockDiagSharedWeight's off-diagonal order
    for pair in range(0, cfg.n_layers, 2):
        layers = [i for i in (pair, pair + 1) if i < cfg.n_layers]
        for fc in ("fc1", "fc2"):
            blocks = [_blocks(parent.ffns[i].state_dict()[f"{fc}_weight"].detach(), k) for i in layers]
            diagonal = _mean([torch.stack([b[r, r] for r in range(k)]) for b in blocks])
            for i, b in zip(layers, blocks):
                state[f"ffns.{i}.{fc}_blocks.diagonal"] = diagonal
                state[f"ffns.{i}.{fc}_blocks.off_diagonal"] = torch.stack([b[r, c] for r, c in off])
        for i in layers:
            state[f"ffns.{i}.norm.weight"] = parent.ffns[i].norm.weight.detach().clone()
    return state


@torch.no_grad()
def global_mass(parent: TransformerLM, idx: Tensor, window: int, global_tokens: int) -> Tensor:
    """Per layer and head (L, H): the mean share of the parent's attention, restricted to the keys a window +
    global-token mask leaves visible, that falls on global keys outside the window."""
    inputs: list[Tensor] = []
    hooks = [a.norm.register_forward_hook(lambda _m, _i, out: inputs.append(out)) for a in parent.attns]
    try:
        parent(idx)
    finally:
        for hook in hooks:
            hook.remove()
    cfg = parent.cfg
    B, S = idx.shape
    H, hd = cfg.n_heads, cfg.hd
    i, j = torch.arange(S).view(S, 1), torch.arange(S).view(1, S)
    in_window = (j <= i) & (i - window < j)
    outside = (j <= i) & (j < global_tokens) & ~in_window
    rope = rope_tables(S, hd, idx.device) if cfg.positions == "rope" else None
    masses = []
    for a, h in zip(parent.attns, inputs):
        q, k, _ = a.wqkv(h).split(H * hd, dim=-1)
        q, k = (t.view(B, S, H, hd).transpose(1, 2) for t in (q, k))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~(in_window | outside), float("-inf"))
        masses.append((scores.softmax(-1) * outside).sum(-1).mean((0, 2)))  # (H,)
    return torch.stack(masses)


def _gate_init(parent: TransformerLM, child: TransformerLM, cfg: ArchConfig, calibration: Tensor | None) -> None:
    """Pass-through gates: weight 0, local gate 1 - p and global gate p (p: global_mass; 0 without calibration)."""
    L = cfg.n_layers
    global_tokens = cfg.global_tokens or 0  # None: not local_global, so no global tokens
    if calibration is not None and global_tokens > 0:
        assert cfg.window is not None, "ArchConfig requires window for local_global"
        mass = global_mass(parent, calibration, cfg.window, global_tokens)
    else:
        mass = torch.zeros(L, cfg.n_heads)
    attn_map = sublayer_maps(cfg)[0]
    for unique, a in enumerate(child.attns):
        p = mass[[i for i, m in enumerate(attn_map) if m == unique]].mean(0).clamp(GATE_EPS, 1 - GATE_EPS)
        a.g_proj.weight.data.zero_()
        a.g_proj.bias.data.copy_(torch.stack([torch.logit(1 - p), torch.logit(p)], dim=1).reshape(-1))


def convert(parent: TransformerLM, cfg: ArchConfig, calibration: Tensor | None = None,
            gate_init: str = "pass_through") -> TransformerLM:
    """A TransformerLM of `cfg` loaded from a dense `parent` of the same sizes (see the module docstring).

    `calibration`: token ids (B, S) on which the gates' pass-through init measures the parent's attention to the
    global tokens; `gate_init="default"` leaves the gates at the model's own init instead.
    """
    if gate_init not in ("pass_through", "default"):
        raise ValueError(f"gate_init={gate_init!r} is invalid: expected pass_through or default")
    _check_parent(parent, cfg)
    device = next(parent.parameters()).device
    child = TransformerLM(cfg).to(device)
    child.load_state_dict(_state(parent, child, cfg))
    if cfg.gate == "dynamic" and gate_init == "pass_through":
        _gate_init(parent, child, cfg, calibration)
    return child
