"""TransformerLM: a decoder-only causal byte LM whose attention, grouping, sharing and precision are knobs."""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from nas.model import attention as attn_kernels
from nas.model.config import ArchConfig, LayerAttention
from nas.model.kv_cache import KVCache, LayerKVCache
from nas.model.precision import precision_linear, quantize_activation
from nas.model.sharing import BlockDiagSharedWeight, sublayer_maps


def attention_core_dtype(fmt: str, device: torch.device) -> torch.dtype | None:
    """dtype the attention core (scores, softmax, values) runs in on a CUDA device; None = as is.

    fp8 formats apply to the projections; the core stays in bf16 (as in Transformer Engine's recipe).
    """
    if device.type != "cuda" or fmt == "fp32":
        return None
    return torch.float16 if fmt == "fp16" else torch.bfloat16


def rope_tables(seq_len: int, head_dim: int, device: torch.device,
                base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (S, hd/2) of rotary position embeddings (RoFormer, Su et al. 2021; GPT-NeoX's half split)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim // 2, device=device, dtype=torch.float32) * 2 / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)  # (S, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, S, hd) by position: pairs (i, i + hd/2) turn by angle pos * inv_freq[i]."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half : 2 * half]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return torch.cat((rotated, x[..., 2 * half :]), dim=-1) if x.size(-1) % 2 else rotated


class FormatLinear(nn.Module):
    """A bias-free linear layer computed in a named numeric format (fp32 master weight)."""

    def __init__(self, in_features: int, out_features: int, fmt: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.fmt = fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return precision_linear(x, self.weight, None, self.fmt)


class Attention(nn.Module):
    """Causal self-attention: fused grouped QKV projection, dense or local+global kernel (per layer), optional gate
    (`gated`: some layer that runs this module is local and gated)."""

    def __init__(self, cfg: ArchConfig, gated: bool | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        H, KV, hd, d = cfg.n_heads, cfg.n_kv, cfg.hd, cfg.d_model
        self.n_q = H if cfg.group_share == "kv" else KV  # distinct query projections
        self.norm = nn.RMSNorm(d)
        self.wqkv = FormatLinear(d, (self.n_q + 2 * KV) * hd, cfg.precision.attention)
        self.wo = FormatLinear(H * hd, d, cfg.precision.attention)
        gated = cfg.gate == "dynamic" if gated is None else gated
        self.g_proj = nn.Linear(d, 2 * H) if gated else None
        self.q_norm = nn.RMSNorm(hd) if cfg.qk_norm else None  # per head, shared by the heads (Qwen3, Gemma 3)
        self.k_norm = nn.RMSNorm(hd) if cfg.qk_norm else None
        self.post_norm = nn.RMSNorm(d) if cfg.post_norms else None
        self.last_gates: torch.Tensor | None = None  # (B, H, S, 2): local, global

    def _qkv(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) \
            -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The normed input and q (B, H, S, hd), k, v (B, KV, S, hd): rotated, in the core's dtype."""
        cfg = self.cfg
        B, S, _ = x.shape
        H, KV, hd = cfg.n_heads, cfg.n_kv, cfg.hd
        h = self.norm(x)
        q, k, v = self.wqkv(h).split([self.n_q * hd, KV * hd, KV * hd], dim=-1)
        q = q.view(B, S, self.n_q, hd).transpose(1, 2)  # (B, n_q, S, hd)
        k = k.view(B, S, KV, hd).transpose(1, 2)  # (B, KV, S, hd)
        v = v.view(B, S, KV, hd).transpose(1, 2)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if self.n_q != H:  # qkv sharing: the heads of a group share Q too
            q = q.repeat_interleave(H // KV, dim=1)  # (B, H, S, hd)
        core_dtype = attention_core_dtype(cfg.precision.attention, x.device)
        if core_dtype is not None:
            q, k, v = q.to(core_dtype), k.to(core_dtype), v.to(core_dtype)
        return h, q, k, v

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        """The output projection of the heads' values y (B, S, H * hd), post-normed where the family does (Gemma)."""
        out = self.wo(y)
        return out if self.post_norm is None else self.post_norm(out)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                layer: LayerAttention | None = None, cache: LayerKVCache | None = None) -> torch.Tensor:
        """Attend over the sequence x (B, S, d) as `layer` says (default: layer 0's attention); with `cache`, its K
        and V are written there too."""
        layer = self.cfg.layer_attention(0) if layer is None else layer
        B, S, _ = x.shape
        h, q, k, v = self._qkv(x, rope)
        if cache is not None:
            cache.append(k, v)
        y = self._core(h, q, k, v, layer).to(x.dtype)  # (B, H, S, hd)
        return self._out(y.transpose(1, 2).reshape(B, S, self.cfg.n_heads * self.cfg.hd))

    def step(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, cache: LayerKVCache,
             layer: LayerAttention) -> torch.Tensor:
        """Attention of one new position x (B, 1, d) over the keys its cache holds (exactly its visible ones)."""
        cfg = self.cfg
        B, H, KV, hd = x.shape[0], cfg.n_heads, cfg.n_kv, cfg.hd
        h, q, k, v = self._qkv(x, rope)
        keys, values = cache.append(k, v)  # (B, KV, slots, hd): every slot is visible to this query
        keys, values = keys.to(q.dtype), values.to(q.dtype)  # a cache kept wider than the core (no-op when equal)
        q = q.view(B, KV, H // KV, hd)  # a group's query heads as rows against their one kv head: no K/V copies
        if not layer.gated or self.g_proj is None:
            y = F.scaled_dot_product_attention(q, keys, values)  # (B, KV, H // KV, hd)
            return self._out(y.to(x.dtype).reshape(B, 1, H * hd))
        # the dynamic gate: the window's keys and the sinks' keys, each softmaxed, weighted by the head's gates
        assert layer.window is not None
        gates = torch.sigmoid(self.g_proj(h)).view(B, KV, H // KV, 2).to(q.dtype)
        threshold = 0.0 if self.training else cfg.gate_threshold
        gates = torch.where(gates >= threshold, gates, torch.zeros_like(gates))
        pos, t = cache.positions()[None, :], cache.length - 1  # (1, slots): the same for every query row
        y = gates[..., :1] * F.scaled_dot_product_attention(q, keys, values, attn_mask=pos > t - layer.window)
        if layer.global_tokens:  # the sinks are the first slots, in place
            g = min(layer.global_tokens, keys.shape[2])
            y = y + gates[..., 1:] * F.scaled_dot_product_attention(q, keys[:, :, :g], values[:, :, :g])
        return self._out(y.to(x.dtype).reshape(B, 1, H * hd))

    def _core(self, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              layer: LayerAttention) -> torch.Tensor:
        cfg = self.cfg
        self.last_gates = None
        if layer.kind == "global":
            return attn_kernels.dense_attention(q, k, v)
        assert layer.window is not None
        if not layer.gated:
            if cfg.backend == "flex":
                if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
                    raise ValueError("ArchConfig.backend='flex' cannot train on CPU (PyTorch's FlexAttention has no "
                                     "CPU backward): use backend=block, which computes the same attention")
                return attn_kernels.flex_local_global_attention(q, k, v, layer.window, layer.global_tokens)
            return attn_kernels.local_global_attention(q, k, v, layer.window, layer.global_tokens, cfg.block_size)
        assert self.g_proj is not None, "a gated local layer runs a module built with the gate (gated_modules)"
        B, S, _ = h.shape
        gates = torch.sigmoid(self.g_proj(h)).view(B, S, cfg.n_heads, 2).permute(0, 2, 1, 3)  # (B, H, S, 2)
        self.last_gates = gates.detach()
        threshold = 0.0 if self.training else cfg.gate_threshold
        return attn_kernels.gated_local_global_attention(
            q, k, v, layer.window, layer.global_tokens, gates[..., 0].to(q.dtype), gates[..., 1].to(q.dtype),
            threshold=threshold, block_size=cfg.block_size,
        )


def gated_modules(cfg: ArchConfig, attn_map: list[int]) -> list[bool]:
    """Per attention module: whether a layer that runs it is a gated local layer (only those have the gate)."""
    gated = [False] * (max(attn_map) + 1)
    for i, a in enumerate(attn_map):
        gated[a] = gated[a] or cfg.layer_attention(i).gated
    return gated


def ffn_weight_names(cfg: ArchConfig) -> tuple[str, ...]:
    """The FFN's weight matrices: fc1 (up; gated: gate), fc3 (gated: up), fc2 (down), as Meta's w1, w3, w2."""
    return ("fc1", "fc2") if cfg.ffn == "gelu" else ("fc1", "fc3", "fc2")


def ffn_weight_shape(cfg: ArchConfig, name: str) -> tuple[int, int]:
    """(out, in) of an FFN weight matrix."""
    return (cfg.d_model, cfg.ffn_hidden) if name == "fc2" else (cfg.ffn_hidden, cfg.d_model)


class FeedForward(nn.Module):
    """Pre-norm MLP, GELU (fc2 gelu(fc1 x)) or gated (fc2 (act(fc1 x) * fc3 x): SwiGLU, GeGLU); with `diagonals`,
    its weights take their diagonal sub-blocks from shared tensors."""

    def __init__(self, cfg: ArchConfig, diagonals: tuple[nn.Parameter, ...] | None = None) -> None:
        super().__init__()
        self.kind, self.names = cfg.ffn, ffn_weight_names(cfg)
        self.fmt: str = "fp32" if cfg.precision.ffn == "adaptive" else cfg.precision.ffn
        self.norm = nn.RMSNorm(cfg.d_model)
        self.post_norm = nn.RMSNorm(cfg.d_model) if cfg.post_norms else None
        self.shared = diagonals is not None
        for i, name in enumerate(self.names):
            shape = ffn_weight_shape(cfg, name)
            if diagonals is None:
                setattr(self, f"{name}_weight", nn.Parameter(torch.empty(shape)))
            else:
                assert cfg.ffn_blocks is not None, "shared diagonals come with sharing=ffn_block_diag"
                setattr(self, f"{name}_blocks", BlockDiagSharedWeight(diagonals[i], *shape, cfg.ffn_blocks))

    def weights(self) -> tuple[torch.Tensor, ...]:
        """The weights in ffn_weight_names order, assembled from sub-blocks when they are shared."""
        if not self.shared:
            return tuple(getattr(self, f"{name}_weight") for name in self.names)
        return tuple(getattr(self, f"{name}_blocks")() for name in self.names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = dict(zip(self.names, self.weights()))
        h = self.norm(x)
        a = precision_linear(h, w["fc1"], None, self.fmt)
        if self.kind == "gelu":
            a = F.gelu(a, approximate="tanh")
        else:
            act = F.silu(a) if self.kind == "swiglu" else F.gelu(a, approximate="tanh")
            a = act * precision_linear(h, w["fc3"], None, self.fmt)
        out = precision_linear(a, w["fc2"], None, self.fmt)
        return out if self.post_norm is None else self.post_norm(out)


class TransformerLM(nn.Module):
    """Decoder-only causal LM built from an ArchConfig; shared layers are the same modules (one tensor)."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.pos_emb = nn.Embedding(cfg.seq_len, d) if cfg.positions == "learned" else None
        self.attn_map, self.ffn_map = sublayer_maps(cfg)
        self.layers = [cfg.layer_attention(i) for i in range(cfg.n_layers)]  # each layer's attention kind
        gated = gated_modules(cfg, self.attn_map)
        self.attns = nn.ModuleList(Attention(cfg, gated[a]) for a in range(max(self.attn_map) + 1))
        self.ffns = nn.ModuleList(self._build_ffns(cfg))
        self.norm = nn.RMSNorm(d)
        self.lm_head = None if cfg.tie_embeddings else nn.Parameter(torch.empty(cfg.vocab_size, d))
        self._init_weights()

    @staticmethod
    def _build_ffns(cfg: ArchConfig) -> list[FeedForward]:
        if cfg.sharing != "ffn_block_diag":
            return [FeedForward(cfg) for _ in range(max(sublayer_maps(cfg)[1]) + 1)]
        k = cfg.ffn_blocks
        assert k is not None, "ArchConfig sets ffn_blocks for sharing=ffn_block_diag"
        ffns = []
        for i in range(cfg.n_layers):
            if i % 2 == 0:  # a new pair (2p, 2p+1) gets its own diagonal blocks; an odd last layer keeps them
                diagonals = tuple(nn.Parameter(torch.empty(k, out // k, in_ // k))
                                  for out, in_ in (ffn_weight_shape(cfg, n) for n in ffn_weight_names(cfg)))
            ffns.append(FeedForward(cfg, diagonals))
        return ffns

    def _init_weights(self) -> None:
        """Fan-in init N(0, 1/d_model), residual output projections scaled by 1/sqrt(2L) (GPT-2's scheme).

        1/sqrt(d_model) is GPT-2's 0.02 at width ~2048 (0.022) and 0.036 at 768; at proxy widths (64) it is
        0.125, where 0.02 leaves the attention logits so flat that a dense proxy needs several times the steps
        to learn recall (a narrow window would then win only by training faster).
        """
        std = self.cfg.d_model ** -0.5
        std_resid = std / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1 and ("norm" in name):
                nn.init.ones_(p)
            elif name.endswith("g_proj.bias"):
                nn.init.zeros_(p)
            else:
                resid = name.endswith(("wo.weight", "fc2_weight")) or ".fc2_blocks." in name
                nn.init.normal_(p, mean=0.0, std=std_resid if resid else std)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, S, vocab); the loss is the task's (nas.evaluation.scoring.train_loss). With an empty `cache`, the
        prompt's keys and values are written there (a prefill; continue with decode_step)."""
        B, S = idx.shape
        if S > self.cfg.seq_len:
            raise ValueError(f"input length {S} exceeds ArchConfig.seq_len={self.cfg.seq_len}")
        if cache is not None and cache.length:
            raise ValueError(f"forward fills an empty KV cache; this one holds {cache.length} positions: "
                             "continue with decode_step")
        fmt = self.cfg.precision.embed
        x = self.tok_emb(idx)
        rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(S, device=idx.device))
        else:
            rope = rope_tables(S, self.cfg.hd, idx.device, self.cfg.rope_theta)
        x = quantize_activation(x, fmt)
        self._gates = []
        for i, (a, f, layer) in enumerate(zip(self.attn_map, self.ffn_map, self.layers)):
            x = x + self.attns[a](x, rope, layer, None if cache is None else cache.layers[i])
            if self.attns[a].last_gates is not None:
                self._gates.append(self.attns[a].last_gates)  # per position: a shared module runs several times
            x = x + self.ffns[f](x)
        head = self.tok_emb.weight if self.lm_head is None else self.lm_head
        return precision_linear(self.norm(x), head, None, fmt)

    def decode_step(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, vocab) of the next token idx (B,) at position cache.length, reading and extending the cache.

        Equals the full forward's logits at that position: each layer attends to the keys its cache keeps.
        """
        t = cache.length
        if t >= cache.max_len:
            raise ValueError(f"KV cache is full ({cache.max_len} positions): decode at most max_len tokens")
        fmt = self.cfg.precision.embed
        x = self.tok_emb(idx.view(-1, 1))  # (B, 1, d)
        rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb.weight[t : t + 1]
        else:
            if cache.rope is None:  # the rotary tables of every position, built once per cache
                cache.rope = rope_tables(cache.max_len, self.cfg.hd, idx.device, self.cfg.rope_theta)
            rope = cache.rope[0][t : t + 1], cache.rope[1][t : t + 1]
        x = quantize_activation(x, fmt)
        for i, (a, f, layer) in enumerate(zip(self.attn_map, self.ffn_map, self.layers)):
            x = x + cast(Attention, self.attns[a]).step(x, rope, cache.layers[i], layer)
            x = x + self.ffns[f](x)
        head = self.tok_emb.weight if self.lm_head is None else self.lm_head
        return precision_linear(self.norm(x), head, None, fmt)[:, 0]

    def param_counts(self) -> dict[str, int]:
        """Parameters counted per layer as if unshared (total) and once per tensor (unique)."""
        def numel(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        shared_free = numel(self.tok_emb) + numel(self.norm) + (numel(self.pos_emb) if self.pos_emb is not None else 0)
        if self.lm_head is not None:
            shared_free += self.lm_head.numel()
        per_layer = sum(numel(self.attns[a]) + numel(self.ffns[f]) for a, f in zip(self.attn_map, self.ffn_map))
        return {"total": shared_free + per_layer, "unique": sum(p.numel() for p in self.parameters())}

    def gate_stats(self, threshold: float = 0.5) -> dict[str, list[list[float]]]:
        """Per layer, per head: mean gate and fraction below `threshold`, for the local and global branches."""
        stats: dict[str, list[list[float]]] = {
            k: [] for k in ("local_mean", "global_mean", "local_below", "global_below")}
        for gates in getattr(self, "_gates", []):
            for j, branch in enumerate(("local", "global")):
                g = gates[..., j].transpose(0, 1).reshape(self.cfg.n_heads, -1)  # (H, B*S)
                stats[f"{branch}_mean"].append(g.mean(dim=1).tolist())
                stats[f"{branch}_below"].append((g < threshold).float().mean(dim=1).tolist())
        return stats

    def set_ffn_format(self, fmt: str) -> None:
        """Switch every FFN to a numeric format (the adaptive-precision move)."""
        for ffn in self.ffns:
            cast(FeedForward, ffn).fmt = fmt  # _build_ffns builds only FeedForward
