"""Training memory of a TransformerLM: weights, gradients, optimizer state and saved activations.

Weights: fp32 master copies of the unique parameters, plus a working copy in the layer's format for every
layer type that is not fp32 (Transformer Engine keeps fp8/bf16 weight copies beside the fp32 master).
Gradients: fp32 per unique parameter. Optimizer: AdamW keeps m and v in fp32 (8 bytes per parameter),
SGD with momentum 4 bytes. Activations: what the backward pass keeps, per layer position (sharing saves
weights, never activations), assuming a fused attention kernel that keeps q, k, v, the output and one
log-sum-exp per query and head (FlashAttention and flex_attention do; the block kernel keeps all but the
log-sum-exp, which its backward recomputes); the residual stream and the norm inputs stay fp32 as in the
model; a matmul keeps its input in its own format; other saved tensors of a reduced-precision layer (q/k/v,
GELU input; SwiGLU/GeGLU: the gate and up outputs, the activation recomputed in the backward as fused SwiGLU
kernels do, where eager PyTorch also keeps act(gate)) are 2 bytes. A norm keeps its input (q/k norms: the raw
q and k; post norms: the sublayer's output) in the layer's saved width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nas.cost.counts import check_workload, core_format, ffn_format, ffn_in_matrices, layer_counts, param_counts
from nas.cost.workload import Workload
from nas.model.config import ArchConfig
from nas.model.precision import format_dtype

OPTIMIZER_STATE_BYTES = {"adamw": 8, "sgd": 4}


def width(fmt: str) -> int:
    """Bytes per element of a numeric format."""
    return format_dtype(fmt).itemsize


def saved_width(fmt: str) -> int:
    """Bytes per element of the non-matmul tensors a layer in `fmt` saves (fp32 stays 4, else 2)."""
    return 4 if fmt == "fp32" else 2


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes held during a training step, by kind; activations also by component."""

    weights: int
    gradients: int
    optimizer: int
    activations: dict[str, int]

    @property
    def activations_total(self) -> int:
        """Bytes of saved activations."""
        return sum(self.activations.values())

    @property
    def total(self) -> int:
        """Bytes of everything held at the peak (end of the forward pass)."""
        return self.weights + self.gradients + self.optimizer + self.activations_total

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of bytes."""
        return {"weights": self.weights, "gradients": self.gradients, "optimizer": self.optimizer,
                **{f"activations_{k}": v for k, v in self.activations.items()},
                "activations": self.activations_total, "total": self.total}


def weight_bytes(arch: ArchConfig) -> int:
    """fp32 master weights plus the low-precision working copies."""
    unique = param_counts(arch)["components"]
    formats = {"qkv": arch.precision.attention, "attn_out": arch.precision.attention, "ffn": ffn_format(arch)}
    copies = sum(width(f) * unique[c]["unique"] for c, f in formats.items() if f != "fp32")
    if arch.precision.embed != "fp32":  # the (vocab x d) weight the lm head multiplies by, tied or not
        copies += width(arch.precision.embed) * arch.vocab_size * arch.d_model
    return 4 * param_counts(arch)["unique"] + copies


def activation_bytes(arch: ArchConfig, workload: Workload) -> dict[str, int]:
    """Bytes the backward pass keeps, by component (attention, ffn, unembedding)."""
    check_workload(arch, workload)
    d, H, KV, hd, L = arch.d_model, arch.n_heads, arch.n_kv, arch.hd, arch.n_layers
    a, f, e = arch.precision.attention, ffn_format(arch), arch.precision.embed
    c = saved_width(core_format(arch))
    attn = 4 * d + width(a) * d + c * (2 * H * hd + 2 * KV * hd) + 4 * H + width(a) * H * hd
    # the gated local layers: g_proj input, both gates, both branch outputs, a second log-sum-exp
    gate = 4 * d + 4 * 2 * H + c * 2 * H * hd + 4 * H
    gated = sum(n for layer, n in layer_counts(arch).items() if layer.gated) * gate
    ffn = 4 * d + width(f) * d + (ffn_in_matrices(arch) * saved_width(f) + width(f)) * arch.ffn_hidden
    if arch.qk_norm:  # the q and k each norm reads
        n_q = H if arch.group_share == "kv" else KV
        attn += c * (n_q + KV) * hd
    if arch.post_norms:  # the output projection's / down projection's output, before its norm
        attn += saved_width(a) * d
        ffn += saved_width(f) * d
    head = 4 * d + width(e) * d + 4 * arch.vocab_size
    T = workload.tokens_per_step
    return {"attention": T * (L * attn + gated), "ffn": T * L * ffn, "unembedding": T * head}


def memory(arch: ArchConfig, workload: Workload, optimizer: str = "adamw") -> MemoryBreakdown:
    """Training memory for one step of the workload with the named optimizer (adamw or sgd)."""
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"optimizer={optimizer!r} is invalid: valid are {', '.join(OPTIMIZER_STATE_BYTES)}")
    unique = param_counts(arch)["unique"]
    return MemoryBreakdown(weights=weight_bytes(arch), gradients=4 * unique,
                           optimizer=OPTIMIZER_STATE_BYTES[optimizer] * unique,
                           activations=activation_bytes(arch, workload))
