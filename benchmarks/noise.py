"""The proxy's seed noise as a search measures it, and what measuring it costs the search's start.

    python benchmarks/noise.py [--spaces sparse_attn precision]     # recorded run: benchmarks/results/noise_cpu.txt

For each space, at its default proxy and task (as `python -m nas.search search_space=NAME` runs it): the adequacy
check alone (one seed of the dense baseline), then the check with the seed noise (nas.evaluation.noise: the study's
seed and NOISE_SEEDS - 1 more, trained beside it in worker processes), into a fresh cache, then once more from the
cache.
Prints the dense baseline's quality per seed, the seed sd, the front's tie margin (2 sqrt(2) sd) and the wall times.
Last line: `noise <space>_sd=... <space>_margin=... <space>_extra_s=... ...` (extra_s: the noise's added wall time).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from nas.evaluation.adequacy import check_adequacy
from nas.evaluation.data import load_task
from nas.evaluation.proxy import load_proxy, proxy_arch
from nas.study.space import default_choice, load, path_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=["sparse_attn", "precision"])
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 torch thread a run; "
          f"load average at start {os.getloadavg()[0]:.1f}")
    print("| space | proxy | task | dense quality per seed | seed sd | tie margin | check alone s | check + noise s "
          "| cached s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    summary = []
    for space in args.spaces:
        proxy = load_proxy(default_choice(space, "proxy") or "tiny")
        task = load_task(default_choice(space, "task") or "lm")
        spec = load(path_of(space), proxy_arch({}, proxy))
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            start = time.perf_counter()
            check_adequacy(spec, proxy, task, threads=1, device="cpu", noise=False)
            alone = time.perf_counter() - start
            start = time.perf_counter()
            noise = check_adequacy(spec, proxy, task, threads=1, device="cpu", noise_root=root).noise
            measured = time.perf_counter() - start
            start = time.perf_counter()
            cached = check_adequacy(spec, proxy, task, threads=1, device="cpu", noise_root=root).noise
            again = time.perf_counter() - start
        assert noise is not None and cached is not None and cached["cached"]
        per_seed = ", ".join(f"{s}: {q:.4f}" for s, q in zip(noise["seeds"], noise["qualities"]))
        print(f"| {space} | {proxy.name} | {task.name} | {per_seed} | {noise['sd']:.4f} | {noise['margin']:.4f} | "
              f"{alone:.0f} | {measured:.0f} | {again:.0f} |", flush=True)
        summary.append(f"{space}_sd={noise['sd']:.4f} {space}_margin={noise['margin']:.4f} "
                       f"{space}_extra_s={measured - alone:.0f}")
    print("noise " + " ".join(summary))


if __name__ == "__main__":
    main()
