"""Inference costs at target scale: KV-cache bytes per sequence, prefill time and decode time per token.

KV cache: per layer position (layers that share weights still see different inputs, so each keeps its own
cache), K and V of n_kv heads x head_dim per cached position, in the cache format = the attention's
precision (fp32 4 bytes, bf16/fp16 2, fp8 1: an fp8 KV cache as vLLM and TensorRT-LLM keep one). A dense
layer caches the whole context; a local_global layer the last `window` positions plus the first
`global_tokens` (sinks), at most the context: exactly the keys its next query may read.

Times are the training roofline's (nas.cost.roofline: each kernel takes the longest of FLOPs / peak and
bytes / bandwidth; where special functions do not overlap, they add) on a hardware profile, at the target's
serving batch and context (Workload.serving):
- prefill: one forward over `context` tokens of `batch` sequences: the weight matmuls, the attention core
  (the kernel this hardware runs, as in training), the KV cache written, the forward's elementwise kernels;
  logits of the last position only (what serving needs).
- decode: one new token for each of `batch` sequences holding `context` cached tokens: every weight matmul
  reads its weight once per step and per use (a layer shared by several positions is read at each: one
  layer of a target-size model exceeds on-chip caches), the attention reads every sequence's cache, writes
  one K and V per layer; compute 2 FLOPs per weight and token plus the attention over the cached keys.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from nas.cost.counts import core_format, ffn_format, layer_counts, matmuls
from nas.cost.hardware import Hardware, load_hardware
from nas.cost.memory import width
from nas.cost.roofline import Kernel, StepTime, core_parts, forward_matmul, out_format, timed
from nas.cost.workload import Serving, Workload
from nas.model.config import ArchConfig, LayerAttention


def cached_positions(layer: LayerAttention, context: int) -> int:
    """Positions a layer caches per sequence after `context` tokens (the keys its next query reads)."""
    if layer.kind == "global" or layer.window is None:
        return context
    return min(context, layer.window + layer.global_tokens)


def layer_attention(arch: ArchConfig) -> list[LayerAttention]:
    """Each layer position's attention (ArchConfig.layer_attention: global layers of a local:global layout too)."""
    return [arch.layer_attention(i) for i in range(arch.n_layers)]


def check_context(arch: ArchConfig, serving: Serving) -> None:
    """Raise ValueError when the serving context exceeds the architecture's positions."""
    if serving.context > arch.seq_len:
        raise ValueError(f"workload.inference.context={serving.context} is invalid: the architecture holds "
                         f"seq_len={arch.seq_len}; use context <= {arch.seq_len}")


def cache_format(arch: ArchConfig) -> str:
    """Numeric format of the KV cache: the attention's precision."""
    return arch.precision.attention


def kv_cache_bytes(arch: ArchConfig, context: int, element_bytes: float | None = None) -> float:
    """KV-cache bytes of one sequence after `context` tokens (elements of the cache format's width, or
    `element_bytes` each)."""
    per_position = 2 * arch.n_kv * arch.hd * (width(cache_format(arch)) if element_bytes is None else element_bytes)
    return sum(cached_positions(layer, context) for layer in layer_attention(arch)) * per_position


def _weight_matmuls(arch: ArchConfig, batch: int, tokens: int, hw: Hardware) -> list[Kernel]:
    """Forward weight matmuls over `tokens` per sequence; the LM head over the last position only."""
    out = []
    for mm in matmuls(arch, Workload(batch, tokens, 1)):
        if mm.component == "unembedding":
            mm = replace(mm, tokens=batch)
        out.append(forward_matmul(mm, hw))
    return out


def _elementwise(arch: ArchConfig, tokens: int, hw: Hardware) -> list[Kernel]:
    """Forward memory-bound kernels over `tokens`: embedding lookup, norms, residual adds, GELU."""
    d, L, hidden = arch.d_model, arch.n_layers, arch.ffn_hidden
    a, f = hw.storage_bytes(arch.precision.attention), hw.storage_bytes(ffn_format(arch))
    o_f = hw.storage_bytes(out_format(ffn_format(arch)))
    return [
        Kernel("embedding", 0, tokens * d * 8),
        Kernel("norm", 0, tokens * d * (L * (8 + a + f) + 4 + hw.storage_bytes(arch.precision.embed))),
        Kernel("residual", 0, L * 2 * tokens * d * 12),
        Kernel("ffn", 0, L * tokens * hidden * (o_f + f), tanhs=L * tokens * hidden),
    ]


def _kv_write(arch: ArchConfig, batch: int, positions: int, hw: Hardware) -> Kernel:
    """Writing `positions` K and V per layer and sequence into the cache."""
    c = hw.storage_bytes(cache_format(arch))
    return Kernel("kv_cache", 0, batch * positions * 2 * arch.n_kv * arch.hd * c)


def prefill_kernels(arch: ArchConfig, serving: Serving, hw: Hardware) -> list[Kernel]:
    """Every kernel of one forward over the context (logits of the last position only), writing the KV cache."""
    check_context(arch, serving)
    B, C, H, KV, hd = serving.batch, serving.context, arch.n_heads, arch.n_kv, arch.hd
    out = _weight_matmuls(arch, B, C, hw) + _elementwise(arch, B * C, hw)
    for layer, n in layer_counts(arch).items():
        for part in core_parts(arch, layer, C, hw):
            c = hw.storage_bytes(part.fmt)
            product = 2 * part.pairs * hd * B * H * n
            q, kv, lse = c * B * C * H * hd * n, c * B * part.keys * KV * hd * n, 4 * B * C * H * n
            exps = part.pairs * B * H * n
            if not part.fused:  # scores written, probabilities read back
                probs = c * part.pairs * B * H * n
                out += [Kernel("attn_scores", product, q + kv + 2 * probs, part.fmt, exps=exps),
                        Kernel("attn_values", product, probs + kv + q, part.fmt)]
                continue
            gather = q if part.kernel == "block" else 0  # rows gathered / scattered per chunk
            eff = hw.kernel_efficiency(part.kernel)
            out += [Kernel("attn_scores", product, q + kv + gather + lse, part.fmt, exps=exps, efficiency=eff),
                    Kernel("attn_values", product, kv + gather + q, part.fmt, efficiency=eff)]
    out.append(_kv_write(arch, B, sum(cached_positions(layer, C) for layer in layer_attention(arch)), hw))
    return out


def decode_kernels(arch: ArchConfig, serving: Serving, hw: Hardware) -> list[Kernel]:
    """Every kernel of one decode step: one token per sequence, each reading its cache of `context` tokens."""
    check_context(arch, serving)
    B, C, H, KV, hd = serving.batch, serving.context, arch.n_heads, arch.n_kv, arch.hd
    out = _weight_matmuls(arch, B, 1, hw) + _elementwise(arch, B, hw)
    c, fmt = hw.storage_bytes(cache_format(arch)), core_format(arch)
    for layer, n in layer_counts(arch).items():
        cached = cached_positions(layer, C)
        pairs = cached  # one query reads every cached key (the gated branches: window and sinks, each softmaxed)
        if layer.kind == "local" and layer.gated:
            pairs = min(C, layer.window or C) + min(C, layer.global_tokens)
        product = 2 * pairs * hd * B * H * n
        kv, q = c * B * cached * KV * hd * n, c * B * H * hd * n
        out += [Kernel("attn_scores", product, q + kv, fmt, exps=pairs * B * H * n),
                Kernel("attn_values", product, kv + q, fmt)]
    out.append(_kv_write(arch, B, arch.n_layers, hw))
    return out


@dataclass(frozen=True)
class InferenceCost:
    """KV-cache bytes per sequence, prefill seconds and decode seconds per token at a serving batch and context."""

    serving: Serving
    kv_cache_bytes: float
    prefill: StepTime
    decode: StepTime

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of the headline figures."""
        return {"inference_batch": self.serving.batch, "inference_context": self.serving.context,
                "kv_cache_bytes": self.kv_cache_bytes, "prefill_time_s": self.prefill.total,
                "decode_time_s": self.decode.total}


def inference(arch: ArchConfig, serving: Serving, hardware: Hardware | str) -> InferenceCost:
    """KV cache, prefill and decode costs of an architecture at a serving batch and context on a hardware profile."""
    hw = load_hardware(hardware) if isinstance(hardware, str) else hardware
    return InferenceCost(serving=serving, kv_cache_bytes=kv_cache_bytes(arch, serving.context),
                         prefill=timed(prefill_kernels(arch, serving, hw), hw),
                         decode=timed(decode_kernels(arch, serving, hw), hw))


__all__ = ["InferenceCost", "LayerAttention", "cache_format", "cached_positions", "decode_kernels", "inference",
           "kv_cache_bytes", "layer_attention", "prefill_kernels"]
