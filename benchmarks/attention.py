"""Benchmark: block-local window + global attention vs dense causal SDPA vs compiled flex_attention.

Times forward and forward+backward (median, or --stat min, of --repeats after warmup, methods interleaved)
and prints each time ratio to dense SDPA beside the FLOP ratio (score entries computed or visible, over the
S(S+1)/2 of causal dense).
Last line: `attention S=<largest> fwd_ratio=... fwdbwd_ratio=... flex_fwd_ratio=...`.

    python benchmarks/attention.py                      # S = 1024..8192, all cores
    python benchmarks/attention.py --sizes 512 1024 --repeats 3 --out
    python benchmarks/attention.py --stat min --repeats 7 --out     # on a machine shared with other jobs
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from nas.model.attention import (
    attention_pairs,
    computed_pairs,
    default_block_size,
    dense_attention,
    flex_available,
    flex_local_global_attention,
    local_global_attention,
)

Fn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192], help="sequence lengths S")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--global-tokens", type=int, default=16)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=None, help="default: --heads (no grouping)")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--block-size", type=int, default=0, help="0 = default_block_size(window, S)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="statistic over repeats; min resists load from other processes on a shared machine")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-flex", action="store_true", help="skip compiled flex_attention (compiles once per S)")
    p.add_argument("--out", action="store_true", help="write benchmarks/results/attention_<device>.txt")
    p.add_argument("--note", default="", help="a line recorded in the results file (e.g. machine state)")
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call takes."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def make_runs(fn: Fn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backward: bool) -> Callable[[], object]:
    """A closure running fn forward (no autograd) or forward + backward."""
    if not backward:
        return torch.no_grad()(lambda: fn(q, k, v))
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    grad = torch.randn_like(q)
    return lambda: torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), grad)


def bench_size(args: argparse.Namespace, seq_len: int, device: torch.device) -> dict[str, dict[str, float | None]]:
    """Forward and forward+backward seconds (median or min over repeats) of every method at one S."""
    kv = args.kv_heads or args.heads
    q = torch.randn(args.batch, args.heads, seq_len, args.head_dim, device=device)
    k = torch.randn(args.batch, kv, seq_len, args.head_dim, device=device)
    v = torch.randn(args.batch, kv, seq_len, args.head_dim, device=device)
    window, glob, block = args.window, args.global_tokens, args.block_size
    methods: dict[str, Fn] = {
        "dense_sdpa": dense_attention,
        "local_global": lambda a, b, c: local_global_attention(a, b, c, window, glob, block),
    }
    if not args.no_flex and flex_available():
        methods["flex_compiled"] = lambda a, b, c: flex_local_global_attention(a, b, c, window, glob, compiled=True)
    runs: dict[tuple[str, str], Callable[[], object]] = {}
    for name, fn in methods.items():
        runs[(name, "fwd")] = make_runs(fn, q, k, v, backward=False)
        if not (name == "flex_compiled" and device.type == "cpu"):  # flex_attention has no CPU backward
            runs[(name, "fwdbwd")] = make_runs(fn, q, k, v, backward=True)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for run in runs.values():
        for _ in range(args.warmup):
            run()
    for _ in range(args.repeats):
        for key, run in runs.items():  # interleaved, so drifting machine load hits every method alike
            times[key].append(time_call(run, device))
    stat = statistics.median if args.stat == "median" else min
    return {
        name: {mode: stat(times[(name, mode)]) if (name, mode) in times else None
               for mode in ("fwd", "fwdbwd")}
        for name in methods
    }


def machine_info(device: torch.device) -> list[str]:
    """CPU model, cores, threads, load, torch version (and GPU name)."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = [
        f"cpu: {cpu}, cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}",
        f"torch {torch.__version__}, python {platform.python_version()}, {platform.platform()}",
        f"load average (1, 5, 15 min) at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]
    if device.type == "cuda":
        info.append(f"gpu: {torch.cuda.get_device_name(device)}")
    return info


def fmt_ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.1f}"


def fmt_ratio(value: float | None, base: float | None) -> str:
    return "n/a" if value is None or base is None else f"{value / base:.3f}"


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print the table and return the summary line."""
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lines = machine_info(device) + ([f"note: {args.note}"] if args.note else [])
    lines.append(
        f"config: W={args.window} G={args.global_tokens} H={args.heads} Hkv={args.kv_heads or args.heads} "
        f"D={args.head_dim} B={args.batch} repeats={args.repeats} ({args.stat}) warmup={args.warmup} device={device}"
    )
    header = (f"{'S':>6} {'method':<14} {'block':>5} {'fwd ms':>9} {'fwd x':>7} {'fwd+bwd ms':>11} {'fwd+bwd x':>10}"
              f" {'computed/dense':>15} {'visible/dense':>14}")
    lines += ["", header, "-" * len(header)]
    print("\n".join(lines), flush=True)
    summary = {}
    for seq_len in args.sizes:
        res = bench_size(args, seq_len, device)
        dense_pairs = seq_len * (seq_len + 1) // 2
        block = args.block_size or default_block_size(args.window, seq_len)
        visible = attention_pairs(seq_len, args.window, args.global_tokens) / dense_pairs
        base = res["dense_sdpa"]
        flops = {
            "dense_sdpa": (1.0, 1.0, "-"),
            "local_global": (computed_pairs(seq_len, args.window, args.global_tokens, block) / dense_pairs,
                             visible, str(block)),
            "flex_compiled": (None, visible, "128"),
        }
        for name, t in res.items():
            computed, vis, blk = flops[name]
            row = (f"{seq_len:>6} {name:<14} {blk:>5} {fmt_ms(t['fwd']):>9} {fmt_ratio(t['fwd'], base['fwd']):>7} "
                   f"{fmt_ms(t['fwdbwd']):>11} {fmt_ratio(t['fwdbwd'], base['fwdbwd']):>10} "
                   f"{'n/a' if computed is None else f'{computed:.3f}':>15} {vis:>14.3f}")
            lines.append(row)
            print(row, flush=True)
        flex = res.get("flex_compiled", {}).get("fwd")
        summary = {
            "S": seq_len,
            "fwd_ratio": fmt_ratio(res["local_global"]["fwd"], base["fwd"]),
            "fwdbwd_ratio": fmt_ratio(res["local_global"]["fwdbwd"], base["fwdbwd"]),
            "flex_fwd_ratio": fmt_ratio(flex, base["fwd"]),
        }
    lines.append(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(lines[-1])
    last = "attention " + " ".join(f"{k}={v}" for k, v in summary.items())
    if args.out:
        path = Path(__file__).resolve().parent / "results" / f"attention_{device.type}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/attention.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        path.write_text("\n".join([f"command: {command}", *lines, last]) + "\n")
    print(last)
    return last


if __name__ == "__main__":
    main()
