"""Benchmark: block-local window + global attention vs dense causal SDPA vs compiled flex_attention.

Times forward and forward+backward (min and median of --repeats after warmup, methods interleaved) and prints
each time ratio to dense SDPA (min to min, median to median) beside the FLOP ratio (score entries computed or
visible, over the S(S+1)/2 of causal dense) and the 1-minute load average when the row was measured.
--contention N runs N busy processes (single-threaded fp32 matmul loops) during the measurement, so a run on
an oversubscribed CPU is reproducible.
Last line: `attention S=<largest> fwd_ratio=... fwdbwd_ratio=... fwdbwd_ratio_min=... flex_fwd_ratio=...`
(median ratios unless named _min).

    python benchmarks/attention.py                      # S = 1024, 2048, 8192, all cores
    python benchmarks/attention.py --sizes 512 1024 --repeats 3 --out
    python benchmarks/attention.py --contention 4 --out --append   # 4 busy processes; add a run to the file
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

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
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 8192], help="sequence lengths S")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--global-tokens", type=int, default=16)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=None, help="default: --heads (no grouping)")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--block-size", type=int, default=0, help="0 = default_block_size(window, S)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    p.add_argument("--contention", type=int, default=0,
                   help="busy background processes (1-thread matmul loops) running during the measurement")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-flex", action="store_true", help="skip compiled flex_attention (compiles once per S)")
    p.add_argument("--baseline-rev", default="", help="git revision whose nas/model/attention.py runs as "
                   "local_global@REV, interleaved with the others (a before/after comparison under the same load)")
    p.add_argument("--out", action="store_true", help="write benchmarks/results/attention_<device>.txt")
    p.add_argument("--append", action="store_true", help="with --out: add this run to the file instead of replacing it")
    p.add_argument("--note", default="", help="a line recorded in the results file (e.g. machine state)")
    args = p.parse_args(argv)
    for name in ("repeats", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name}={getattr(args, name)} is invalid: expected an integer >= 1")
    for name in ("warmup", "contention"):
        if getattr(args, name) < 0:
            p.error(f"--{name}={getattr(args, name)} is invalid: expected an integer >= 0")
    return args


BUSY_SIZE = 512  # matmul size of a busy process: ~30 ms per product on one core, no allocation in the loop


def _busy(stop: mp.synchronize.Event) -> None:
    """A busy background process: single-threaded fp32 matmuls until stop is set."""
    torch.set_num_threads(1)
    a, b = torch.randn(BUSY_SIZE, BUSY_SIZE), torch.randn(BUSY_SIZE, BUSY_SIZE)
    out = torch.empty(BUSY_SIZE, BUSY_SIZE)
    while not stop.is_set():
        torch.mm(a, b, out=out)


@contextmanager
def contention(n: int) -> Iterator[None]:
    """Run n busy processes for the duration of the block."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_busy, args=(stop,), daemon=True) for _ in range(n)]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


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


Stats = dict[str, dict[str, tuple[float, float] | None]]


@lru_cache(maxsize=1)
def load_kernel(rev: str) -> Fn:
    """local_global_attention of nas/model/attention.py at git revision rev."""
    repo = Path(__file__).resolve().parent.parent
    try:
        src = subprocess.run(["git", "show", f"{rev}:nas/model/attention.py"], cwd=repo, check=True,
                             capture_output=True, text=True).stdout
    except subprocess.CalledProcessError:
        print(f"attention.py: error: --baseline-rev={rev} is invalid: expected a git revision of {repo} that has "
              "nas/model/attention.py", file=sys.stderr)
        raise SystemExit(2) from None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(f"attention_at_{rev}", f.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(f.name)
    return module.local_global_attention


def bench_size(args: argparse.Namespace, seq_len: int, device: torch.device) -> Stats:
    """Forward and forward+backward seconds, (min, median) over repeats, of every method at one S."""
    kv = args.kv_heads or args.heads
    q = torch.randn(args.batch, args.heads, seq_len, args.head_dim, device=device)
    k = torch.randn(args.batch, kv, seq_len, args.head_dim, device=device)
    v = torch.randn(args.batch, kv, seq_len, args.head_dim, device=device)
    window, glob, block = args.window, args.global_tokens, args.block_size
    methods: dict[str, Fn] = {
        "dense_sdpa": dense_attention,
        "local_global": lambda a, b, c: local_global_attention(a, b, c, window, glob, block),
    }
    if args.baseline_rev:
        base = load_kernel(args.baseline_rev)
        methods[f"local_global@{args.baseline_rev}"] = lambda a, b, c: base(a, b, c, window, glob, block)
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
    return {
        name: {mode: (min(times[(name, mode)]), statistics.median(times[(name, mode)])) if (name, mode) in times
               else None for mode in ("fwd", "fwdbwd")}
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


def fmt_ms(stats: tuple[float, float] | None) -> str:
    """'min/median' in milliseconds."""
    return "n/a" if stats is None else f"{stats[0] * 1e3:.1f}/{stats[1] * 1e3:.1f}"


def ratios(stats: tuple[float, float] | None, base: tuple[float, float] | None) -> tuple[float, float] | None:
    """(min ratio, median ratio) of stats to base."""
    return None if stats is None or base is None else (stats[0] / base[0], stats[1] / base[1])


def fmt_ratio(value: tuple[float, float] | None) -> str:
    return "n/a" if value is None else f"{value[0]:.3f}/{value[1]:.3f}"


def fmt_one(value: tuple[float, float] | None, which: int) -> str:
    return "n/a" if value is None else f"{value[which]:.3f}"


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark, print the table and return the summary line."""
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.baseline_rev:
        load_kernel(args.baseline_rev)  # a bad revision fails here, before any output
    lines = machine_info(device) + ([f"note: {args.note}"] if args.note else [])
    lines.append(
        f"config: W={args.window} G={args.global_tokens} H={args.heads} Hkv={args.kv_heads or args.heads} "
        f"D={args.head_dim} B={args.batch} repeats={args.repeats} warmup={args.warmup} device={device} "
        f"contention={args.contention} busy processes"
    )
    header = (f"{'S':>6} {'method':<22} {'block':>5} {'fwd ms min/med':>15} {'fwd x min/med':>14} "
              f"{'fwd+bwd ms min/med':>19} {'fwd+bwd x min/med':>18} {'computed/dense':>15} {'visible/dense':>14} "
              f"{'load1':>6}")
    lines += ["", header, "-" * len(header)]
    print("\n".join(lines), flush=True)
    summary = {}
    with contention(args.contention):
        for seq_len in args.sizes:
            res = bench_size(args, seq_len, device)
            load = os.getloadavg()[0]
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
                computed, vis, blk = flops[name.split("@")[0]]
                row = (f"{seq_len:>6} {name:<22} {blk:>5} {fmt_ms(t['fwd']):>15} "
                       f"{fmt_ratio(ratios(t['fwd'], base['fwd'])):>14} {fmt_ms(t['fwdbwd']):>19} "
                       f"{fmt_ratio(ratios(t['fwdbwd'], base['fwdbwd'])):>18} "
                       f"{'n/a' if computed is None else f'{computed:.3f}':>15} {vis:>14.3f} {load:>6.2f}")
                lines.append(row)
                print(row, flush=True)
            fwdbwd = ratios(res["local_global"]["fwdbwd"], base["fwdbwd"])
            summary = {
                "S": seq_len,
                "fwd_ratio": fmt_one(ratios(res["local_global"]["fwd"], base["fwd"]), 1),
                "fwdbwd_ratio": fmt_one(fwdbwd, 1),
                "fwdbwd_ratio_min": fmt_one(fwdbwd, 0),
                "flex_fwd_ratio": fmt_one(ratios(res.get("flex_compiled", {}).get("fwd"), base["fwd"]), 1),
            }
    lines.append(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(lines[-1])
    last = "attention " + " ".join(f"{k}={v}" for k, v in summary.items())
    if args.out:
        path = Path(__file__).resolve().parent / "results" / f"attention_{device.type}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/attention.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        text = "\n".join([f"command: {command}", *lines, last]) + "\n"
        if args.append and path.exists():
            text = path.read_text() + "\n" + text
        path.write_text(text)
    print(last)
    return last


if __name__ == "__main__":
    main()
