"""Roofline step time: each kernel of a training step takes the longest of FLOPs / peak of its dtype,
bytes / bandwidth, and special functions (exp, tanh) / their rate; where special functions do not run
beside the matmuls (one CPU thread), they add to the longer of the other two.

Kernels of one step:
- per weight matmul a forward, an input-gradient and a weight-gradient matmul (fp8: gradients in e5m2, the
  HYBRID recipe; weight gradients written in fp32);
- the attention core over the score entries the kernel really computes. Dense: SDPA's fused flash kernel.
  local_global without the gate: the profile's `local_global_kernel` (GPUs: compiled flex_attention, fused
  and block-sparse, in the core format; CPU: the block kernel). The block kernel (and the gate's local branch,
  always) computes in fp32, chunk by cache-sized chunk. Fused kernels recompute the scores
  in the backward (5 matmuls, 2.5x the forward); the gate's global branch is plain autograd matmuls (2x)
  whose probabilities go through memory;
- memory-bound elementwise kernels (embedding lookup, norms, residual adds, GELU or the gated SwiGLU/GeGLU
  product, the gate's mixing, softmax cross-entropy) and the optimizer update.
Bytes are each kernel's reads and writes of its operands in their storage format; on a profile that emulates
reduced precisions (the CPU) every tensor is stored as fp32 and each rounding costs the profile's
emulation_bytes_per_element. An attention kernel reaches the profile's attention_efficiency of the matmul peak
(measured on the CPU; 1 on the GPU profiles, an upper bound). A model, not a simulator: no launch overheads,
caches or partial overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from nas.cost.counts import (
    Matmul,
    attention_pairs_per_head,
    core_format,
    ffn_format,
    layer_counts,
    matmuls,
    param_counts,
)
from nas.cost.hardware import FP32_MATMUL, Hardware, load_hardware
from nas.cost.memory import OPTIMIZER_STATE_BYTES, weight_bytes
from nas.cost.workload import Workload
from nas.model.attention import computed_pairs
from nas.model.config import ArchConfig, LayerAttention

MEMORY_BOUND = "memory"  # `fmt` of a kernel with no matmul work


@dataclass(frozen=True)
class Kernel:
    """One kernel of a training step: matmul FLOPs, bytes moved, and the numeric format of its matmuls."""

    component: str
    flops: float
    bytes: float
    fmt: str = MEMORY_BOUND
    exps: float = 0.0  # exponentials (softmax, sigmoid)
    tanhs: float = 0.0  # tanh evaluations (GELU, tanh approximation)
    efficiency: float = 1.0  # fraction of the matmul peak this kernel attains


def out_format(fmt: str) -> str:
    return "fp32" if fmt == "fp32" else "bf16"


def _grad_format(fmt: str) -> str:
    return "fp8_e5m2" if fmt.startswith("fp8") else fmt


def forward_matmul(mm: Matmul, hw: Hardware) -> Kernel:
    """The forward kernel of a weight matmul: read input and weight (rounded in software where emulated), write
    the output (fp32, or bf16 for a reduced format); every use of a shared weight reads it again."""
    M, K, N, n = mm.tokens, mm.d_in, mm.d_out, mm.count
    s, o, r = hw.storage_bytes(mm.fmt), hw.storage_bytes(out_format(mm.fmt)), hw.rounding_bytes(mm.fmt)
    return Kernel(mm.component, mm.flops, n * ((s + r) * (M * K + K * N) + o * M * N), mm.fmt)


def _matmul_kernels(arch: ArchConfig, workload: Workload, hw: Hardware) -> list[Kernel]:
    out = []
    for mm in matmuls(arch, workload):
        M, K, N, n = mm.tokens, mm.d_in, mm.d_out, mm.count
        s, o = hw.storage_bytes(mm.fmt), hw.storage_bytes(out_format(mm.fmt))
        g = _grad_format(mm.fmt)
        sg, rg = hw.storage_bytes(g), hw.rounding_bytes(g)
        flops = 2 * M * K * N * n
        out += [
            forward_matmul(mm, hw),
            Kernel(mm.component, flops, n * ((sg + rg) * M * N + s * K * N + o * M * K), mm.fmt),
            Kernel(mm.component, flops, n * (sg * M * N + s * M * K + 4 * K * N), mm.fmt),
        ]
    return out


class _CorePart(NamedTuple):
    """One attention kernel: which (flash, flex, block; matmul = plain autograd matmuls), score entries per
    head, its format, and keys it reads per kv head."""

    kernel: str
    pairs: int
    fmt: str
    keys: int

    @property
    def fused(self) -> bool:
        """Scores never reach memory; the backward recomputes them."""
        return self.kernel != "matmul"


def core_parts(arch: ArchConfig, layer: LayerAttention, seq_len: int, hw: Hardware) -> list[_CorePart]:
    """The attention kernels one layer of this kind runs on this hardware."""
    S = seq_len
    if layer.kind == "global":  # SDPA: a fused flash kernel
        return [_CorePart("flash", attention_pairs_per_head(arch, S, "kernel", layer), core_format(arch), S)]
    assert layer.window is not None
    if not layer.gated and hw.local_global_kernel == "flex":  # compiled flex_attention: fused, block-sparse
        flex = arch.replace(backend="flex")
        return [_CorePart("flex", attention_pairs_per_head(flex, S, "kernel", layer), core_format(arch), S)]
    # the block kernel (the gate's local branch too): fp32 core, chunks of query blocks against key spans
    gated = layer.gated
    pairs = computed_pairs(S, layer.window, 0 if gated else layer.global_tokens, arch.block_size)
    parts = [_CorePart("block", pairs, "fp32", S)]
    G = min(layer.global_tokens, S)
    if gated and G:  # the global branch: autograd matmuls against the first G keys, probabilities saved
        parts.append(_CorePart("matmul", S * G, core_format(arch), G))
    return parts


def _attention_kernels(arch: ArchConfig, workload: Workload, hw: Hardware) -> list[Kernel]:
    B, S = workload.batch, workload.seq_len
    H, KV, hd = arch.n_heads, arch.n_kv, arch.hd
    out = []
    parts = [(part, n) for layer, n in layer_counts(arch).items() for part in core_parts(arch, layer, S, hw)]
    for part, L in parts:  # L: the layers that run this kernel
        c = hw.storage_bytes(part.fmt)
        product = 2 * part.pairs * hd * B * H * L  # one of QK^T, PV
        q, kv, lse = c * B * S * H * hd * L, c * B * part.keys * KV * hd * L, 4 * B * S * H * L
        exps = part.pairs * B * H * L  # one softmax exponential per score entry
        if not part.fused:  # scores and probabilities go through memory; the backward reuses them
            probs = c * part.pairs * B * H * L
            out += [
                Kernel("attn_scores", product, q + kv + 3 * probs, part.fmt, exps=exps),
                Kernel("attn_values", product, probs + kv + q, part.fmt),
                Kernel("attn_scores", 2 * product, 3 * probs + 2 * (q + kv), part.fmt),  # dQ, dK
                Kernel("attn_values", 2 * product, 2 * probs + 2 * (q + kv), part.fmt),  # dP, dV
            ]
            continue
        fwd, bwd = kv, 2 * kv
        if part.kernel == "block":  # rows gathered/scattered per chunk (q, out; dout, dq), dk/dv zeroed first
            fwd, bwd = fwd + q, bwd + kv + 2 * q
        eff = hw.kernel_efficiency(part.kernel)
        out += [  # the backward recomputes the scores (and their exponentials)
            Kernel("attn_scores", product, q + fwd + lse, part.fmt, exps=exps, efficiency=eff),
            Kernel("attn_values", product, fwd + q, part.fmt, efficiency=eff),
            Kernel("attn_scores", 3 * product, 2 * q + bwd + lse, part.fmt, exps=exps, efficiency=eff),  # S, dQ, dK
            Kernel("attn_values", 2 * product, bwd + 2 * q, part.fmt, efficiency=eff),  # dP, dV
        ]
    return out


def _elementwise_kernels(arch: ArchConfig, workload: Workload, hw: Hardware) -> list[Kernel]:
    T, L, d, V = workload.tokens_per_step, arch.n_layers, arch.d_model, arch.vocab_size
    a, f, e = arch.precision.attention, ffn_format(arch), arch.precision.embed
    hidden = arch.ffn_hidden

    def norm(fmt: str) -> float:  # fwd: read x, write the normed copy; bwd: read x and the grad, write a grad
        s, o = hw.storage_bytes(fmt), hw.storage_bytes(out_format(fmt))
        return T * d * (4 + s + hw.rounding_bytes(fmt) + 8 + o)

    o_f, s_f, o_e = hw.storage_bytes(out_format(f)), hw.storage_bytes(f), hw.storage_bytes(out_format(e))
    kernels = [
        Kernel("embedding", 0, T * d * (12 + hw.rounding_bytes(e) + 20)),
        Kernel("norm", 0, L * (norm(a) + norm(f)) + norm(e)),
        Kernel("residual", 0, L * 2 * T * d * (12 + 12)),
        _ffn_activation_kernel(arch, T, hidden, o_f, s_f),
        Kernel("unembedding", 0, T * V * 2 * (o_e + 8), exps=2 * T * V),  # log-softmax and its backward
    ]
    if arch.post_norms:  # a norm on each sublayer's output, in the sublayer's format (fp32 unless reduced)
        kernels.append(Kernel("norm", 0, L * (norm(a) + norm(f))))
    if arch.qk_norm:  # q and k normed per head: (n_q + KV) * hd values per token instead of d
        n_q = arch.n_heads if arch.group_share == "kv" else arch.n_kv
        kernels.append(Kernel("norm", 0, L * norm(core_format(arch)) * (n_q + arch.n_kv) * arch.hd / d))
    gated = sum(n for layer, n in layer_counts(arch).items() if layer.gated)
    if gated:  # mix the two branch outputs with the gates, and back (the gated local layers)
        c = hw.storage_bytes(core_format(arch))
        kernels.append(Kernel("gate", 0, gated * T * 3 * (3 * arch.n_heads * arch.hd * c + 8 * arch.n_heads),
                              exps=gated * T * 2 * arch.n_heads))
    return kernels


def _ffn_activation_kernel(arch: ArchConfig, T: int, hidden: int, o_f: float, s_f: float) -> Kernel:
    """The FFN's elementwise activation over L * T * hidden values, forward and backward.

    GELU: read a, write gelu(a); backward read the grad and a, write a grad (tanh twice). Gated (SwiGLU / GeGLU):
    read gate and up, write the product; backward read the grad, gate and up, write two grads (the sigmoid's
    exponential, or GeGLU's tanh, twice).
    """
    n = arch.n_layers * T * hidden
    if arch.ffn == "gelu":
        return Kernel("ffn", 0, n * (o_f + s_f + 3 * o_f), tanhs=2 * n)
    swiglu = arch.ffn == "swiglu"
    return Kernel("ffn", 0, n * (2 * o_f + s_f + 5 * o_f), exps=2 * n if swiglu else 0, tanhs=0 if swiglu else 2 * n)


def _optimizer_kernel(arch: ArchConfig, hw: Hardware, optimizer: str) -> Kernel:
    unique = param_counts(arch)["unique"]
    state = OPTIMIZER_STATE_BYTES[optimizer]
    copies = 0 if hw.emulated else weight_bytes(arch) - 4 * unique  # refresh the low-precision copies
    # read weight, grad and state; write weight and state; zero the grad
    return Kernel("optimizer", 0, unique * (4 + 4 + state + 4 + state + 4) + copies)


def kernels(arch: ArchConfig, workload: Workload, hw: Hardware, optimizer: str = "adamw") -> list[Kernel]:
    """Every kernel of one training step (forward, backward, optimizer update)."""
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"optimizer={optimizer!r} is invalid: valid are {', '.join(OPTIMIZER_STATE_BYTES)}")
    return (_matmul_kernels(arch, workload, hw) + _attention_kernels(arch, workload, hw)
            + _elementwise_kernels(arch, workload, hw) + [_optimizer_kernel(arch, hw, optimizer)])


@dataclass(frozen=True)
class StepTime:
    """Modelled seconds, FLOPs and bytes moved of one training step, by component."""

    hardware: str
    seconds: dict[str, float]
    flops: dict[str, float]
    bytes: dict[str, float]

    @property
    def total(self) -> float:
        """Seconds per training step."""
        return sum(self.seconds.values())

    @property
    def bytes_total(self) -> float:
        """Bytes moved per training step."""
        return sum(self.bytes.values())

    def to_dict(self) -> dict[str, Any]:
        """Flat dict: seconds and bytes per component, and the totals."""
        return {**{f"s_{k}": v for k, v in self.seconds.items()}, **{f"bytes_{k}": v for k, v in self.bytes.items()},
                "seconds": self.total, "bytes": self.bytes_total}


def step_time(arch: ArchConfig, workload: Workload, hardware: Hardware | str, fp32_matmul: str = "fp32",
              optimizer: str = "adamw") -> StepTime:
    """Roofline seconds of one training step on a hardware profile (fp32 matmuls as fp32 or tf32)."""
    if fp32_matmul not in FP32_MATMUL:
        raise ValueError(f"fp32_matmul={fp32_matmul!r} is invalid: valid are {', '.join(FP32_MATMUL)}")
    hw = load_hardware(hardware) if isinstance(hardware, str) else hardware
    return timed(kernels(arch, workload, hw, optimizer), hw, fp32_matmul)


def kernel_seconds(k: Kernel, hw: Hardware, fp32_matmul: str = "fp32") -> float:
    """Roofline seconds of one kernel: the longest of compute, memory and special functions (or their sum)."""
    peak = hw.matmul_flops_per_s(k.fmt, fp32_matmul) * k.efficiency if k.fmt != MEMORY_BOUND else 0.0
    compute = k.flops / peak if peak else 0.0
    memory = k.bytes / (hw.bandwidth_gbs * 1e9)
    special = (k.exps / hw.special_gops["exp"] + k.tanhs / hw.special_gops["tanh"]) / 1e9
    return max(compute, memory, special) if hw.special_overlaps else max(compute, memory) + special


def timed(kernel_list: list[Kernel], hw: Hardware, fp32_matmul: str = "fp32") -> StepTime:
    """Roofline seconds, FLOPs and bytes of a list of kernels, summed by component."""
    seconds: dict[str, float] = {}
    flops: dict[str, float] = {}
    moved: dict[str, float] = {}
    for k in kernel_list:
        t = kernel_seconds(k, hw, fp32_matmul)
        seconds[k.component] = seconds.get(k.component, 0.0) + t
        flops[k.component] = flops.get(k.component, 0.0) + k.flops
        moved[k.component] = moved.get(k.component, 0.0) + k.bytes
    return StepTime(hardware=hw.name, seconds=seconds, flops=flops, bytes=moved)
