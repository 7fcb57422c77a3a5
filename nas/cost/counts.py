"""Analytic parameter and FLOP counts of a TransformerLM, by component.

FLOP convention: matrix multiplications only (2 FLOPs per multiply-add), as FlopCounterMode and nanoGPT's
transformer_sizing count them; embedding lookups, norms, activations and softmax count 0 FLOPs. The
backward pass is 2x the forward (one matmul for the input gradient, one for the weight gradient), so a
training step is 3x the forward.

Attention pairs per (sequence, head), by `attention` mode:
  causal: the (query, key) pairs the mask lets through: S(S+1)/2 for dense causal, the exact local+global
          count for local_global (with the dynamic gate, the local and the global branch each, since each
          has its own softmax);
  kernel: the score entries a kernel really computes: dense = causal FlashAttention with FLASH_TILE-square
          tiles; local_global = the block kernel's padded blocks (backend=flex: the same layout with
          flex_attention's 128-wide blocks); gated global branch = S x G;
  full:   S^2 for every layer, as FlopCounterMode counts SDPA and nanoGPT counts attention.
With group_share=qkv the H heads are still computed (the model repeats Q, K, V to H heads).
Each layer is counted as ArchConfig.layer_attention says: a global layer as dense, a local one by its window.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from nas.cost.workload import Workload
from nas.model.attention import attention_pairs, computed_pairs
from nas.model.config import ArchConfig, LayerAttention
from nas.model.sharing import sublayer_maps

COMPONENTS = ("embedding", "qkv", "attn_out", "gate", "attn_scores", "attn_values", "ffn", "unembedding")
ATTENTION_MODES = ("causal", "kernel", "full")
FLASH_TILE = 128  # FlashAttention-2/3 query and key tile on Hopper/Ampere
FLEX_BLOCK = 128  # flex_attention's default BlockMask block


@dataclass(frozen=True)
class Matmul:
    """`count` multiplications (tokens x d_in) @ (d_in x d_out) per forward, in numeric format `fmt`."""

    component: str
    tokens: int
    d_in: int
    d_out: int
    count: int
    fmt: str

    @property
    def flops(self) -> int:
        """Forward FLOPs of all `count` multiplications."""
        return 2 * self.tokens * self.d_in * self.d_out * self.count


def layer_counts(arch: ArchConfig) -> Counter[LayerAttention]:
    """How many layers run each kind of attention (ArchConfig.layer_attention)."""
    return Counter(arch.layer_attention(i) for i in range(arch.n_layers))


def gated_positions(arch: ArchConfig) -> tuple[int, int]:
    """(layer positions, distinct modules) that hold the dynamic gate: the modules some gated local layer runs."""
    attn_map = sublayer_maps(arch)[0]
    modules = {a for i, a in enumerate(attn_map) if arch.layer_attention(i).gated}
    return sum(a in modules for a in attn_map), len(modules)


def check_workload(arch: ArchConfig, workload: Workload) -> None:
    """Raise ValueError when the workload's sequences do not fit the architecture."""
    if workload.seq_len > arch.seq_len:
        raise ValueError(f"Workload.seq_len={workload.seq_len} is invalid: the architecture's positional "
                         f"embedding holds seq_len={arch.seq_len}; use seq_len <= {arch.seq_len}")


def ffn_format(arch: ArchConfig) -> str:
    """Numeric format of the FFN matmuls (adaptive: its fp8 target format, the steady state)."""
    p = arch.precision
    return p.adaptive_format if p.ffn == "adaptive" else p.ffn


def ffn_in_matrices(arch: ArchConfig) -> int:
    """FFN matrices that read the d_model input: 1 (GELU: up) or 2 (SwiGLU / GeGLU: gate and up)."""
    return 1 if arch.ffn == "gelu" else 2


def core_format(arch: ArchConfig) -> str:
    """Numeric format of the attention core (scores, softmax, values): fp8 projections keep it in bf16."""
    fmt = arch.precision.attention
    return "bf16" if fmt.startswith("fp8") else fmt


def matmuls(arch: ArchConfig, workload: Workload) -> list[Matmul]:
    """Every weight matmul of one forward pass over the workload's batch."""
    check_workload(arch, workload)
    T, L, d = workload.tokens_per_step, arch.n_layers, arch.d_model
    H, KV, hd = arch.n_heads, arch.n_kv, arch.hd
    n_q = H if arch.group_share == "kv" else KV
    attn, ffn = arch.precision.attention, ffn_format(arch)
    out = [
        Matmul("qkv", T, d, (n_q + 2 * KV) * hd, L, attn),
        Matmul("attn_out", T, H * hd, d, L, attn),
        Matmul("ffn", T, d, arch.ffn_hidden, ffn_in_matrices(arch) * L, ffn),  # up (and gate, for SwiGLU/GeGLU)
        Matmul("ffn", T, arch.ffn_hidden, d, L, ffn),
        Matmul("unembedding", T, d, arch.vocab_size, 1, arch.precision.embed),
    ]
    gated = sum(n for layer, n in layer_counts(arch).items() if layer.gated)
    if gated:  # g_proj is a plain fp32 nn.Linear in the model, run by the gated local layers
        out.append(Matmul("gate", T, d, 2 * H, gated, "fp32"))
    return out


def _global_branch_pairs(seq_len: int, global_tokens: int, mode: str) -> int:
    g = min(global_tokens, seq_len)
    return seq_len * g if mode == "kernel" else g * (g + 1) // 2 + (seq_len - g) * g


def attention_pairs_per_head(arch: ArchConfig, seq_len: int, mode: str = "causal",
                             layer: LayerAttention | None = None) -> int:
    """(query, key) score entries per sequence and head in one layer (default: layer 0; see the module docstring
    for modes)."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention={mode!r} is not a pair-count mode: valid are {', '.join(ATTENTION_MODES)}")
    layer = arch.layer_attention(0) if layer is None else layer
    S = seq_len
    if mode == "full":
        return S * S
    if layer.kind == "global":
        if mode == "causal":
            return S * (S + 1) // 2
        tile = min(FLASH_TILE, S)
        n = -(-S // tile)
        return tile * tile * n * (n + 1) // 2
    W, G = layer.window, layer.global_tokens
    assert W is not None
    block = FLEX_BLOCK if arch.backend == "flex" else arch.block_size
    if layer.gated:
        local = attention_pairs(S, W, 0) if mode == "causal" else computed_pairs(S, W, 0, block)
        return local + _global_branch_pairs(S, G, mode)
    return attention_pairs(S, W, G) if mode == "causal" else computed_pairs(S, W, G, block)


@dataclass(frozen=True)
class FlopBreakdown:
    """Forward matmul FLOPs of one optimizer step by component; backward = 2x, training step = 3x."""

    forward: dict[str, int]
    workload: Workload
    attention: str

    @property
    def forward_total(self) -> int:
        """Forward FLOPs of one step."""
        return sum(self.forward.values())

    @property
    def step(self) -> int:
        """Training FLOPs of one optimizer step (forward + backward)."""
        return 3 * self.forward_total

    @property
    def train_total(self) -> float:
        """Training FLOPs over the workload's train_tokens."""
        return self.step * self.workload.steps

    def to_dict(self) -> dict[str, Any]:
        """Flat dict: forward FLOPs per component and the totals."""
        return {**{f"fwd_{k}": v for k, v in self.forward.items()}, "fwd_total": self.forward_total,
                "step": self.step, "train_total": self.train_total}


def flops(arch: ArchConfig, workload: Workload, attention: str = "causal") -> FlopBreakdown:
    """Matmul FLOPs of one training step by component, attention pairs counted by `attention` mode."""
    forward = dict.fromkeys(COMPONENTS, 0)
    for mm in matmuls(arch, workload):
        forward[mm.component] += mm.flops
    pairs = sum(n * attention_pairs_per_head(arch, workload.seq_len, attention, layer)
                for layer, n in layer_counts(arch).items())  # summed over layers
    per_product = 2 * pairs * arch.hd * arch.n_heads * workload.batch
    forward["attn_scores"] = forward["attn_values"] = per_product
    return FlopBreakdown(forward=forward, workload=workload, attention=attention)


def param_counts(arch: ArchConfig) -> dict[str, Any]:
    """Parameters by component, each counted per layer position (total) and once per tensor (unique)."""
    d, H, KV, hd, L, V = arch.d_model, arch.n_heads, arch.n_kv, arch.hd, arch.n_layers, arch.vocab_size
    n_q = H if arch.group_share == "kv" else KV
    attn_map, ffn_map = sublayer_maps(arch)
    n_attn, n_ffn = max(attn_map) + 1, max(ffn_map) + 1
    attn_layer = {"qkv": d * (n_q + 2 * KV) * hd, "attn_out": H * hd * d}
    n_mat = ffn_in_matrices(arch) + 1
    ffn_layer = n_mat * d * arch.ffn_hidden
    # per sublayer: its input norm, an output norm with post_norms (Gemma), q and k norms of head_dim (Qwen3, Gemma 3)
    attn_norms = d * (2 if arch.post_norms else 1) + (2 * hd if arch.qk_norm else 0)
    ffn_norms = d * (2 if arch.post_norms else 1)
    head = 0 if arch.tie_embeddings else V * d
    positions = arch.seq_len * d if arch.positions == "learned" else 0  # rotary positions have no table
    gate = d * 2 * H + 2 * H  # g_proj, in the modules some gated local layer runs
    gated_total, gated_unique = gated_positions(arch)
    total = {"embedding": (V * d + positions), "unembedding": head, "norm": L * (attn_norms + ffn_norms) + d,
             **{k: L * v for k, v in attn_layer.items()}, "gate": gated_total * gate, "ffn": L * ffn_layer}
    unique = {"embedding": total["embedding"], "unembedding": head,
              "norm": n_attn * attn_norms + n_ffn * ffn_norms + d,
              **{k: n_attn * v for k, v in attn_layer.items()}, "gate": gated_unique * gate, "ffn": n_ffn * ffn_layer}
    if arch.sharing == "ffn_block_diag":  # adjacent layers (2p, 2p+1) share the k diagonal sub-blocks
        k = arch.ffn_blocks
        assert k is not None, "ArchConfig sets ffn_blocks for sharing=ffn_block_diag"
        block = (arch.ffn_hidden // k) * (d // k)
        unique["ffn"] = n_mat * (L * k * (k - 1) * block + (L + 1) // 2 * k * block)
    return {"total": sum(total.values()), "unique": sum(unique.values()),
            "components": {c: {"total": total[c], "unique": unique[c]} for c in total}}
