"""Orchestration overhead of the search (Ray Tune + Optuna + store) per trial, no-op and with the tiny proxy.

    python benchmarks/overhead.py [--noop-trials 16] [--tiny-trials 16] [--concurrency 2]

No-op: a trainable that reports once and returns. After a warm-up search, the per-trial overhead is the
marginal wall time of one more trial (best of three searches of 4 and of 4+n trials; fixed costs cancel).
Tiny proxy: the default search (proxy=tiny, task=lm, TPE, Pareto pruner; 16 trials as the README command).
Each trial's work is timed inside it; overhead is the slot time in which no trial worked although trials
remained (Ray start, actor start, gaps between trials, per-rung Optuna/store handling; not the natural tail
when fewer trials than slots remain). share = overhead / total slot time, ray.init included.
Both use a local Ray with `concurrency` CPUs and SQLite in a temp dir. The last line is the summary.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Noop:
    """A trial that does nothing: one report, final."""

    def __call__(self, knobs, *, seed, threads):
        now = time.time()
        yield {"step": 1, "tokens": 1, "quality": 1.0 + knobs.get("window", 0) / 100, "final": True,
               "metrics": {"t0": now, "t1": now}}


class Timed:
    """Wraps a runner; each report carries the wall-clock span [t0, t1] of the work that produced it."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, knobs, *, seed, threads):
        iterator = iter(self.inner(knobs, seed=seed, threads=threads))
        while True:
            t0 = time.time()
            try:
                report = next(iterator)
            except StopIteration:
                return
            yield {**report, "metrics": {**report["metrics"], "t0": t0, "t1": time.time()}}


def lost_slot_seconds(spans: list[list[tuple[float, float]]], start: float, conc: int, dt: float = 0.01) -> float:
    """Slot-seconds with no trial working although trials remained: integral of min(conc, left) - working."""
    import numpy as np

    end = max(t1 for trial in spans for _, t1 in trial)
    grid = np.arange(start, end, dt)
    working = np.zeros_like(grid)
    left = np.zeros_like(grid)
    for trial in spans:
        left += grid < max(t1 for _, t1 in trial)
        for t0, t1 in trial:
            working += (grid >= t0) & (grid < t1)
    return float(np.clip(np.minimum(conc, left) - working, 0, None).sum() * dt)


def compose(*overrides: str):
    from hydra import compose as hydra_compose, initialize_config_dir

    from nas.profiles import conf_dir
    from nas.search import config

    config.register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose("search", overrides=["dashboard=false", *overrides])


def search(name: str, url: str, n: int, conc: int, runner, *extra: str) -> tuple[float, list, float]:
    """(wall seconds, per trial the work spans of its reports, start time) of one search."""
    from nas.search import run_search
    from nas.store import Store

    start = time.time()
    run_search(compose(f"study={name}", f"store.url={url}", f"n_trials={n}", f"ray.max_concurrent={conc}", *extra),
               trial_runner=runner, out=None)
    wall = time.time() - start
    store = Store(url)
    spans = [[(r.metrics["t0"], r.metrics["t1"]) for r in t.reports] for t in store.trials(name) if t.reports]
    store.close()
    return wall, spans, start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noop-trials", type=int, default=16)
    parser.add_argument("--tiny-trials", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    import ray
    from ray import cloudpickle

    from nas.proxy import load_proxy
    from nas.data import load_task
    from nas.search.runner import ProxyRunner

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    conc = args.concurrency
    t0 = time.perf_counter()
    ray.init(num_cpus=conc, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_start = time.perf_counter() - t0
    tmp = tempfile.mkdtemp(prefix="nas-overhead-")
    url = f"sqlite:///{tmp}/nas.db"
    base = ("sampler=random", "pruner=none", "adequacy=skip")  # orchestration only: no proxy adequacy training
    search("warmup", url, 2, conc, Noop(), *base)  # first worker processes and imports
    # best of three of each: other processes on the machine only ever add time
    short = min(search(f"noop_a{i}", url, 4, conc, Noop(), *base)[0] for i in range(3))
    long = min(search(f"noop_b{i}", url, 4 + args.noop_trials, conc, Noop(), *base)[0] for i in range(3))
    per_trial = (long - short) / args.noop_trials
    fixed = short - 4 * per_trial
    wall, spans, start = search("tiny", url, args.tiny_trials, conc,
                                Timed(ProxyRunner(load_proxy("tiny"), load_task("lm"))))
    lost = lost_slot_seconds(spans, start, conc)
    work = sum(t1 - t0 for trial in spans for t0, t1 in trial)
    share = (lost + ray_start * conc) / ((wall + ray_start) * conc)
    ray.shutdown()

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, load "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; concurrency {conc}")
    print(f"{'case':<34}{'trials':>8}{'wall_s':>10}{'per_trial_s':>13}")
    print(f"{'ray.init (local, once)':<34}{'-':>8}{ray_start:>10.2f}{'-':>13}")
    print(f"{'no-op search, fixed cost':<34}{4:>8}{short:>10.2f}{fixed:>13.2f}")
    print(f"{'no-op search, marginal per trial':<34}{4 + args.noop_trials:>8}{long:>10.2f}{per_trial:>13.3f}")
    print(f"{'tiny proxy search':<34}{args.tiny_trials:>8}{wall:>10.2f}{lost / args.tiny_trials:>13.3f}")
    print(f"tiny proxy: trial work {work:.1f} slot-s, slots idle while trials remained {lost:.1f} slot-s "
          f"of {wall * conc:.1f} (includes the first actor's start); ray.init {ray_start * conc:.1f} slot-s")
    print(f"overhead per_trial_s={per_trial:.3f} share={share:.3f}")


if __name__ == "__main__":
    main()
