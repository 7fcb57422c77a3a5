"""Cost-model oracles: analytic FLOPs vs FlopCounterMode, the nanoGPT golden value, modelled vs measured CPU
step time (Spearman rank), modelled vs measured CPU decode time per token (Spearman rank), and the
dense-vs-knobs table at the gpt_1b target on an H100.

    python benchmarks/cost.py                 # full run; writes benchmarks/results/cost_cpu.txt
    python benchmarks/cost.py --quick         # smoke run: 3 timing rounds instead of 10, nothing written
    python benchmarks/cost.py --decode-only   # the decode check and the inference table alone; writes
                                              # benchmarks/results/cost_decode_cpu.txt
    python benchmarks/cost.py --calibrate     # measure this CPU and rewrite conf/hardware/cpu.yaml

Timing runs on one torch thread; run it on a quiet machine.
Last line: `cost flops_err_max=... spearman_cpu=... decode_spearman=...` (--decode-only: `cost decode_spearman=...`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nas.cost import Serving, Workload, estimate, flops, load_hardware, step_time
from nas.cost.hardware import PEAK_DTYPES, ROUNDED_FORMATS, Hardware
from nas.cost.inference import decode_kernels
from nas.cost.roofline import timed
from nas.model import ArchConfig, TransformerLM
from nas.model.attention import local_global_attention
from nas.model.kv_cache import KVCache
from nas.model.precision import quantize
from nas.profiles import conf_dir

GPT2_GOLDEN = 874_944_921_600  # nanoGPT transformer_sizing.ipynb: GPT-2 124M, T=1024, fwd+bwd
RESULTS = Path(__file__).resolve().parent / "results" / "cost_cpu.txt"
DECODE_RESULTS = RESULTS.with_name("cost_decode_cpu.txt")

FLOP_SIZES = [  # (ArchConfig fields, batch, seq_len) for the FlopCounterMode comparison
    (dict(seq_len=64, n_layers=2, d_model=64, n_heads=4), 2, 64),
    (dict(seq_len=128, n_layers=3, d_model=96, n_heads=6, kv_heads=2), 2, 128),
    (dict(seq_len=128, n_layers=2, d_model=128, n_heads=4, kv_heads=1, group_share="qkv"), 1, 100),
    (dict(seq_len=256, n_layers=4, d_model=128, n_heads=8, tie_embeddings=False, ffn_mult=3.0), 1, 256),
    (dict(seq_len=64, n_layers=2, d_model=256, n_heads=4, vocab_size=1000), 2, 64),
    (dict(seq_len=128, n_layers=2, d_model=64, n_heads=4, attention="local_global", window=16, global_tokens=4),
     2, 128),
    (dict(seq_len=128, n_layers=2, d_model=64, n_heads=4, attention="local_global", window=24, global_tokens=8,
          gate="dynamic", kv_heads=2), 2, 128),
]

def _lg(window: int, global_tokens: int, **more) -> dict:
    return dict(attention="local_global", window=window, global_tokens=global_tokens, **more)


S1K = dict(seq_len=1024, n_layers=2, d_model=128, n_heads=4)  # attention-heavy
TIMING_CONFIGS = {  # name -> (ArchConfig fields, batch); tiny but not trivial proxies of every knob
    "dense_d64_l2_s128": (dict(seq_len=128, n_layers=2, d_model=64, n_heads=4), 8),
    "dense_d128_l2_s256": (dict(seq_len=256, n_layers=2, d_model=128, n_heads=4), 4),
    "dense_d128_l4_s256": (dict(seq_len=256, n_layers=4, d_model=128, n_heads=4), 8),
    "dense_d256_l4_s256": (dict(seq_len=256, n_layers=4, d_model=256, n_heads=8), 4),
    "dense_d384_l2_s128": (dict(seq_len=128, n_layers=2, d_model=384, n_heads=6), 4),
    "dense_d128_l2_s1024": (S1K, 2),
    "local_w32_g4_s1024": ({**S1K, **_lg(32, 4)}, 2),
    "local_w128_g4_s1024": ({**S1K, **_lg(128, 4)}, 2),
    "gated_w64_g16_s1024": ({**S1K, **_lg(64, 16, gate="dynamic")}, 2),
    "mqa_d256_kv1": (dict(seq_len=256, n_layers=4, d_model=256, n_heads=8, kv_heads=1), 4),
    "qkv_share_d256_kv2": (dict(seq_len=256, n_layers=4, d_model=256, n_heads=8, kv_heads=2, group_share="qkv"), 4),
    "cycle_m2_d128_l6": (dict(seq_len=256, n_layers=6, d_model=128, n_heads=4, sharing="cycle", unique_layers=2), 8),
    "ffn_block_diag_d192": (dict(seq_len=256, n_layers=4, d_model=192, n_heads=6, sharing="ffn_block_diag",
                                 sharing_scope="ffn"), 4),
    "ffn8_d128_l4": (dict(seq_len=256, n_layers=4, d_model=128, n_heads=4, ffn_mult=8.0), 4),
    "bf16_d128_l4": (dict(seq_len=256, n_layers=4, d_model=128, n_heads=4,
                          precision=dict(attention="bf16", ffn="bf16", embed="bf16")), 8),
    "fp8_ffn_d128_l4": (dict(seq_len=256, n_layers=4, d_model=128, n_heads=4, precision=dict(ffn="fp8_e4m3")), 8),
}

# head_dim 32; 8193 positions: the step after an 8k context
D256 = dict(seq_len=8193, n_layers=4, d_model=256, n_heads=8)
D512 = dict(seq_len=8193, n_layers=4, d_model=512, n_heads=8)  # head_dim 64
DECODE_BATCH = 4
DECODE_REPEATS = 5  # consecutive steps per config and round (rounds interleave the configs)
DECODE_CONFIGS = {  # name -> (ArchConfig fields, context): KV-dominated long contexts, weight-dominated short ones
    "dense_d256_c512": (D256, 512),
    "dense_d256_c2k": (D256, 2048),
    "dense_d256_c8k": (D256, 8192),
    "local_w256_g16_c8k": ({**D256, **_lg(256, 16)}, 8192),
    "local_w1k_g0_c8k": ({**D256, **_lg(1024, 0)}, 8192),
    "local_w64_g4_c2k": ({**D256, **_lg(64, 4)}, 2048),
    "gated_w512_g16_c8k": ({**D256, **_lg(512, 16, gate="dynamic")}, 8192),
    "gqa_kv2_c8k": ({**D256, "kv_heads": 2}, 8192),
    "mqa_kv1_c8k": ({**D256, "kv_heads": 1}, 8192),
    "qkv_share_kv2_c8k": ({**D256, "kv_heads": 2, "group_share": "qkv"}, 8192),
    "dense_d512_c256": (D512, 256),
    "dense_d512_c4k": (D512, 4096),
    "gqa_d512_kv2_c4k": ({**D512, "kv_heads": 2}, 4096),
    "local_d512_w512_g16_c4k": ({**D512, **_lg(512, 16)}, 4096),
    "dense_d256_l8_c1k": ({**D256, "n_layers": 8}, 1024),
}

TABLE_CONFIGS = {  # name -> knobs in gpt_1b units (24 layers, 16 heads, S=2048)
    "dense fp32 (baseline)": {},
    "dense bf16": dict(precision=dict(attention="bf16", ffn="bf16", embed="bf16")),
    "dense fp8 (bf16 embed)": dict(precision=dict(attention="fp8_e4m3", ffn="fp8_e4m3", embed="bf16")),
    "dense bf16, adaptive FFN": dict(precision=dict(attention="bf16", ffn="adaptive", embed="bf16")),
    "local_global W=512 G=16": dict(attention="local_global", window=512, global_tokens=16),
    "local_global W=128 G=16": dict(attention="local_global", window=128, global_tokens=16),
    "local_global W=128 G=16 gated": dict(attention="local_global", window=128, global_tokens=16, gate="dynamic"),
    "GQA kv=4": dict(kv_heads=4),
    "MQA kv=1": dict(kv_heads=1),
    "QKV shared, 4 groups": dict(kv_heads=4, group_share="qkv"),
    "cycle M=12": dict(sharing="cycle", unique_layers=12),
    "all layers shared (ALBERT)": dict(sharing="all"),
    "ffn_block_diag k=4": dict(sharing="ffn_block_diag", sharing_scope="ffn"),
    "local W=128 + GQA 4 + fp8": dict(attention="local_global", window=128, global_tokens=16, kv_heads=4,
                                      precision=dict(attention="fp8_e4m3", ffn="fp8_e4m3", embed="bf16")),
}


INFERENCE_TABLE = {  # name -> knobs in gpt_1b_32k units (24 layers, 16 heads of 128, S=32768)
    "dense fp32 (baseline)": {},
    "dense bf16": dict(precision=dict(attention="bf16", ffn="bf16", embed="bf16")),
    "local_global W=2048 G=16": dict(attention="local_global", window=2048, global_tokens=16),
    "local_global W=512 G=16": dict(attention="local_global", window=512, global_tokens=16),
    "local_global W=512 G=16 gated": dict(attention="local_global", window=512, global_tokens=16, gate="dynamic"),
    "GQA kv=4": dict(kv_heads=4),
    "MQA kv=1": dict(kv_heads=1),
    "QKV shared, 4 groups": dict(kv_heads=4, group_share="qkv"),
    "cycle M=12": dict(sharing="cycle", unique_layers=12),
    "attention fp8 (fp8 KV cache), FFN bf16": dict(precision=dict(attention="fp8_e4m3", ffn="bf16", embed="bf16")),
    "W=512 G=16 + GQA 4 + bf16": dict(attention="local_global", window=512, global_tokens=16, kv_heads=4,
                                      precision=dict(attention="bf16", ffn="bf16", embed="bf16")),
}


def inference_table(emit) -> None:  # noqa: ANN001
    """Emit the inference ratios of INFERENCE_TABLE at gpt_1b_32k (batch 1, 32k context) on the H100 profile."""
    emit("\n## 6. gpt_1b_32k target, inference at its serving batch and context (batch 1, 32,768 tokens), ratios to "
         "dense fp32, modelled H100 SXM")
    emit("| config | FLOPs ratio | KV-cache ratio | prefill time ratio | decode time ratio |\n"
         "|---|---:|---:|---:|---:|")
    for name, knobs in INFERENCE_TABLE.items():
        r = estimate(knobs, target="gpt_1b_32k", hardware="h100_sxm")
        emit(f"| {name} | {r.flops_ratio:.3f} | {r.kv_cache_ratio:.4f} | {r.prefill_time_ratio:.3f} | "
             f"{r.decode_time_ratio:.3f} |")
    base = estimate({}, target="gpt_1b_32k", hardware="h100_sxm").to_dict()
    emit(f"baseline: KV cache {base['kv_cache_bytes'] / 2**30:.1f} GiB per sequence, prefill "
         f"{base['prefill_time_s']:.2f} s, decode {base['decode_time_s'] * 1e3:.2f} ms per token modelled")


def _best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def attention_efficiency(hw: Hardware) -> dict[str, float]:
    """Fraction of the matmul peak at which the modelled time of SDPA's flash kernel and of the block kernel
    (forward + backward, B=2, H=4, S=1024, D=32, block kernel W=64 G=4) equals their measured time here."""
    B, H, S, D = 2, 4, 1024, 32
    q, k, v = (torch.randn(B, H, S, D, requires_grad=True) for _ in range(3))
    runs = {
        "flash": ({}, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        "block": (dict(attention="local_global", window=64, global_tokens=4),
                  lambda: local_global_attention(q, k, v, 64, 4)),
    }
    out = {}
    for kernel, (knobs, attend) in runs.items():
        measured = _best_seconds(lambda: attend().sum().backward(), 10)  # noqa: B023
        arch = ArchConfig(seq_len=S, n_layers=1, d_model=H * D, n_heads=H, **knobs)

        def modelled(eff: float) -> float:
            profile = dataclasses.replace(hw, attention_efficiency={kernel: eff})  # noqa: B023
            t = step_time(arch, Workload(B, S, 1), profile)  # noqa: B023
            return t.seconds["attn_scores"] + t.seconds["attn_values"]

        lo, hi = 1e-4, 1.0  # modelled time falls as the efficiency rises: bisect for the measured time
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if modelled(mid) > measured else (lo, mid)
        out[kernel] = round(hi, 4)
    return out


def calibrate() -> str:
    """Measure this CPU on one thread; return the text of conf/hardware/cpu.yaml."""
    torch.set_num_threads(1)
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    gflops = 2 * n**3 / _best_seconds(lambda: a @ b, 20) / 1e9
    x, y = torch.randn(1 << 25), torch.empty(1 << 25)  # 128 MiB each: far beyond the caches
    bandwidth = 2 * x.numel() * 4 / _best_seconds(lambda: y.copy_(x), 5) / 1e9
    act = torch.randn(1 << 20)  # 4 MiB: a proxy-sized activation, reused by the caching allocator
    special = {name: act.numel() / _best_seconds(lambda fn=fn: fn(act), 10) / 1e9
               for name, fn in (("exp", torch.exp), ("tanh", torch.tanh))}
    emulation = {fmt: round(_best_seconds(lambda fmt=fmt: quantize(act, fmt), 10) * bandwidth * 1e9 / act.numel(), 1)
                 for fmt in ROUNDED_FORMATS}
    memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    hw = Hardware(name="cpu", peak_tflops=dict.fromkeys(PEAK_DTYPES, gflops / 1000), bandwidth_gbs=bandwidth,
                  memory_gb=memory_gb, special_gops=special, special_overlaps=False, local_global_kernel="block",
                  emulated=True, emulation_bytes=emulation)
    efficiency = attention_efficiency(hw)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"""# This machine's CPU ({cpu}, {os.cpu_count()} cores), measured on ONE torch thread
# by `python benchmarks/cost.py --calibrate` on {datetime.date.today().isoformat()} (torch {torch.__version__},
# load average {load} at the end):
#   fp32 peak: best of 20 fp32 {n}x{n} @ {n}x{n} matmuls (2 n^3 FLOPs each);
#   bandwidth: best of 5 copies of a 128 MiB fp32 tensor (read + write = 256 MiB);
#   emulation_bytes_per_element: best of 10 nas.model.precision.quantize calls on 1M fp32 elements (4 MiB,
#     a proxy-sized activation), seconds x bandwidth / elements: the software rounding of one operand element
#     in bytes-equivalent of memory traffic (fp8: per-tensor amax, scale, saturate, cast and back);
#   special_gops: best of 10 torch.exp / torch.tanh over the same 1M elements (evaluations per second / 1e9);
#     one thread runs them after, not beside, its matmuls (special_overlaps: false);
#   attention_efficiency: the fraction of the fp32 peak at which the modelled forward + backward time of
#     SDPA's flash kernel and of the block kernel (B=2, H=4, S=1024, D=32; block: W=64, G=4) equals the best
#     of 10 measured (small head dimensions keep both far from the peak of large matmuls).
# bf16/fp16/fp8 have no native matmul here: the model emulates them (round trip through the real dtype,
# fp32 storage and accumulation), so every dtype runs at the fp32 rate plus the rounding overhead.
name: cpu
description: {cpu}, 1 torch thread
peak_tflops:
  fp32: {gflops / 1000:.5f}
  tf32: {gflops / 1000:.5f}
  bf16: {gflops / 1000:.5f}
  fp16: {gflops / 1000:.5f}
  fp8: {gflops / 1000:.5f}
memory_bandwidth_gbs: {bandwidth:.2f}
memory_gb: {memory_gb}
special_gops: {{exp: {special["exp"]:.3f}, tanh: {special["tanh"]:.3f}}}
special_overlaps: false
attention_efficiency: {{flash: {efficiency["flash"]}, block: {efficiency["block"]}}}
local_global_kernel: block   # the block kernel (flex_attention on CPU is eager: dense scores)
emulated: true
emulation_bytes_per_element:
""" + "".join(f"  {fmt}: {value}\n" for fmt, value in emulation.items())


def flop_counter_errors() -> list[tuple[str, int, int, float]]:
    """(config, FlopCounterMode forward FLOPs, analytic, relative error) for every FLOP_SIZES entry."""
    rows = []
    for fields, batch, seq in FLOP_SIZES:
        arch = ArchConfig(**fields)
        model = TransformerLM(arch)
        idx = torch.randint(0, arch.vocab_size, (batch, seq))
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(idx)  # MATH SDPA is two bmm's over all S^2 pairs: the "full" count; local_global: its kernel
        mode = "full" if arch.attention == "dense" else "kernel"
        analytic = flops(arch, Workload(batch, seq, 1), attention=mode).forward_total
        measured = counter.get_total_flops()
        name = ",".join(f"{k}={v}" for k, v in fields.items()) + f",B={batch},S={seq}"
        rows.append((name, measured, analytic, abs(analytic - measured) / measured))
    return rows


def golden() -> int:
    """nanoGPT's GPT-2 124M fwd+bwd FLOPs at T=1024 from the analytic model (full, non-causal attention)."""
    arch = ArchConfig(vocab_size=50257, seq_len=1024, n_layers=12, d_model=768, n_heads=12)
    return flops(arch, Workload(1, 1024, 1), attention="full").step


def _training_step(fields: dict, batch: int):  # noqa: ANN202
    """A closure running one AdamW training step (forward, backward, update) of a fresh model."""
    torch.manual_seed(0)
    arch = ArchConfig(**fields)
    model = TransformerLM(arch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idx = torch.randint(0, arch.vocab_size, (batch, arch.seq_len))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(idx)
        loss = F.cross_entropy(logits.float().flatten(0, 1), idx.flatten())
        loss.backward()
        opt.step()

    return step


def measured_steps(configs: dict[str, tuple[dict, int]], rounds: int) -> dict[str, float]:
    """Best seconds per training step of each config on one thread, the configs interleaved round by round
    (so a busy spell on the machine slows one round of every config rather than every round of one)."""
    steps = {name: _training_step(fields, batch) for name, (fields, batch) in configs.items()}
    for step in steps.values():  # warm up
        step()
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def _decode_step(fields: dict, context: int, batch: int):  # noqa: ANN202
    """A closure running one KV-cache decode step of a fresh model at position `context`.

    The cache is filled with random K and V of `context` positions (a decode step's work does not depend on
    their values; a prefill of 8k tokens per config would cost seconds each); after each step the cache is
    rewound to `context` positions, so every timed step reads the same cache.
    """
    torch.manual_seed(0)
    arch = ArchConfig(**fields)
    model = TransformerLM(arch).eval()
    cache = KVCache(arch, batch, max_len=context + 1)
    for layer in cache.layers:
        layer.append(torch.randn(batch, arch.n_kv, context, arch.hd), torch.randn(batch, arch.n_kv, context, arch.hd))
    idx = torch.randint(0, arch.vocab_size, (batch,))

    def step() -> None:
        with torch.no_grad():
            model.decode_step(idx, cache)
        for layer in cache.layers:
            layer.length = context

    return step


def measured_decode(configs: dict[str, tuple[dict, int]], batch: int, rounds: int) -> dict[str, float]:
    """Best seconds per decode step (one token for each of `batch` sequences) of each config, interleaved."""
    steps = {name: _decode_step(fields, context, batch) for name, (fields, context) in configs.items()}
    for step in steps.values():  # warm up
        step()
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(rounds):
        for name, step in steps.items():
            for _ in range(DECODE_REPEATS):
                t = time.perf_counter()
                step()
                best[name] = min(best[name], time.perf_counter() - t)
    return best


def decode_check(emit, rounds: int) -> float:  # noqa: ANN001
    """Emit the modelled vs measured decode table; return the Spearman rank correlation."""
    hw = load_hardware("cpu")
    emit(f"\n## 5. Modelled (roofline, conf/hardware/cpu.yaml) vs measured CPU decode step (KV cache, batch "
         f"{DECODE_BATCH}, fp32, 1 thread)")
    emit("TransformerLM.decode_step with nas.model.kv_cache.KVCache (local layers keep window + global tokens);"
         f" best of {rounds}x{DECODE_REPEATS} steps")
    emit("| config | context | cache MiB | measured ms (best) | modelled ms | measured/modelled |\n"
         "|---|---:|---:|---:|---:|---:|")
    best = measured_decode(DECODE_CONFIGS, DECODE_BATCH, rounds)
    measured, modelled = [], []
    for name, (fields, context) in DECODE_CONFIGS.items():
        arch = ArchConfig(**fields)
        m = best[name]
        p = timed(decode_kernels(arch, Serving(DECODE_BATCH, context), hw), hw).total
        cache = KVCache(arch, DECODE_BATCH, max_len=context).nbytes() / 2**20
        measured.append(m)
        modelled.append(p)
        emit(f"| {name} | {context} | {cache:.0f} | {m * 1e3:.2f} | {p * 1e3:.2f} | {m / p:.2f} |")
    rho = spearman(measured, modelled)
    emit(f"Spearman rank correlation over {len(measured)} configs: {rho:.3f}")
    return rho


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(x: list[float]) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 timing rounds, write nothing")
    parser.add_argument("--calibrate", action="store_true", help="measure this CPU into conf/hardware/cpu.yaml")
    parser.add_argument("--decode-only", action="store_true", help="only the decode check (section 5)")
    parser.add_argument("--note", default="", help="a line on the machine's state, written under the header")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.calibrate:
        text = calibrate()
        (conf_dir() / "hardware" / "cpu.yaml").write_text(text)
        print(text)
        return

    lines: list[str] = []
    emit = lambda s="": (print(s, flush=True), lines.append(s))  # noqa: E731
    load = os.getloadavg()
    emit(f"# benchmarks/cost.py on {platform.node()} ({os.cpu_count()} cores), torch {torch.__version__}, "
         f"1 thread, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
         f"loadavg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.note:
        emit(f"# {args.note}")
    if args.decode_only:
        emit("# --decode-only: sections 5 and 6 alone")
        decode_rho = decode_check(emit, 3 if args.quick else 30)
        inference_table(emit)
        load = os.getloadavg()
        emit(f"# loadavg at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        emit(f"\ncost decode_spearman={decode_rho:.3f}")
        if not args.quick:
            DECODE_RESULTS.write_text("\n".join(lines) + "\n")
        return

    emit("\n## 1. Analytic forward FLOPs vs torch.utils.flop_counter.FlopCounterMode")
    emit("dense: counted as `full` (MATH SDPA multiplies all S^2 pairs); local_global: the block kernel's pairs")
    emit("| config | FlopCounterMode | analytic | rel. error |\n|---|---:|---:|---:|")
    rows = flop_counter_errors()
    for name, measured, analytic, err in rows:
        emit(f"| {name} | {measured:,} | {analytic:,} | {err:.2e} |")
    err_max = max(r[3] for r in rows)

    emit("\n## 2. nanoGPT golden value (GPT-2 124M, T=1024, fwd+bwd, full attention, matmuls only)")
    value = golden()
    emit(f"analytic {value:,}  golden {GPT2_GOLDEN:,}  equal={value == GPT2_GOLDEN}")

    emit("\n## 3. Modelled (roofline, conf/hardware/cpu.yaml) vs measured CPU training step (AdamW, 1 thread)")
    hw = load_hardware("cpu")
    emit("| config | batch | measured s (best) | modelled s | measured/modelled |\n|---|---:|---:|---:|---:|")
    best = measured_steps(TIMING_CONFIGS, 3 if args.quick else 10)
    measured, modelled = [], []
    for name, (fields, batch) in TIMING_CONFIGS.items():
        arch = ArchConfig(**fields)
        m, p = best[name], step_time(arch, Workload(batch, arch.seq_len, 1), hw).total
        measured.append(m)
        modelled.append(p)
        emit(f"| {name} | {batch} | {m:.4f} | {p:.4f} | {m / p:.2f} |")
    rho = spearman(measured, modelled)
    emit(f"Spearman rank correlation over {len(measured)} configs: {rho:.3f}")

    emit("\n## 4. gpt_1b target (24L, d=2048, 16 heads, S=2048, batch 8), ratios to dense fp32, modelled H100 SXM")
    emit("| config | FLOPs ratio | unique-params ratio | memory ratio | H100 time ratio |\n|---|---:|---:|---:|---:|")
    for name, knobs in TABLE_CONFIGS.items():
        r = estimate(knobs, target="gpt_1b", hardware="h100_sxm")
        emit(f"| {name} | {r.flops_ratio:.3f} | {r.unique_params_ratio:.3f} | {r.memory_ratio:.3f} | "
             f"{r.time_ratio:.3f} |")
    base = estimate({}, target="gpt_1b", hardware="h100_sxm").to_dict()
    emit(f"baseline: {base['step_flops']:.3e} FLOPs/step, {base['params_unique']:,} params, "
         f"{base['memory_bytes'] / 2**30:.1f} GiB, {base['step_time_s']:.3f} s/step modelled")
    decode_rho = decode_check(emit, 3 if args.quick else 30)
    inference_table(emit)
    load = os.getloadavg()
    emit(f"# loadavg at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    emit(f"\ncost flops_err_max={err_max:.2e} spearman_cpu={rho:.3f} decode_spearman={decode_rho:.3f}")
    if not args.quick:
        RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
