"""Fixed and per-trial overhead of a search: Ray start-up as the README search sees it, orchestration per trial.

    python benchmarks/overhead.py [--noop-trials 16] [--tiny-trials 12] [--concurrency 2]

README search: `search_space=sparse_attn` as the README runs it (adequacy check, its default tiny_2m proxy, TPE,
Pareto pruner, 12 trials), with Ray started by the search itself, twice: Ray started in the background while the
driver prepares (as the search does) and, for comparison, started only once the driver is ready for trials (as it
used to). Each trial's work is timed inside it. Ray start-up exposed = the time from "driver ready for trials" to
the first trial's work (Ray start-up not hidden behind the preparation, plus the first Tune actor's start); its
share is of the search's wall time. Orchestration share = slot time in which no trial worked although trials
remained, after the driver was ready (actor starts, gaps between trials, per-rung Optuna/store handling; not the
natural tail when fewer trials than slots remain), over the slot time from then to the end.
No-op: a trainable that reports once and returns, on a Ray started once; the per-trial overhead is the marginal wall
time of one more trial (best of three searches of 4 and of 4+n trials; fixed costs cancel).
SQLite in a temp dir. The last line is the summary.
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

    def __call__(self, knobs, *, arch=None, seed, threads):
        now = time.time()
        yield {"step": 1, "tokens": 1, "quality": 1.0 + knobs.get("window", 0) / 100, "final": True,
               "metrics": {"t0": now, "t1": now}}


class Timed:
    """Wraps a runner; each report carries the wall-clock span [t0, t1] of the work that produced it."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, knobs, *, arch=None, seed, threads):
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
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nas.profiles import conf_dir
    from nas.search import schema

    schema.register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose("search", overrides=["dashboard=false", *overrides])


class Timeline:
    """Wall-clock moments of one search's Ray start-up (time.time()), recorded by TimedRayStart."""

    moments: dict[str, float] = {}


def timed_ray_start(overlap: bool):
    """nas.search's RayStart, recording when start-up begins, when the driver waits for it and when it is up;
    with overlap=False start-up begins only when the driver waits (the driver before Ray started in the background)."""
    from nas.search.ray_start import RayStart

    class TimedRayStart(RayStart):
        def start(self):
            if not overlap:
                return self
            Timeline.moments["ray_start"] = time.time()
            return super().start()

        def wait(self):
            Timeline.moments["driver_ready"] = time.time()
            if not overlap:
                Timeline.moments["ray_start"] = time.time()
                super().start()
            started = super().wait()
            Timeline.moments["ray_ready"] = time.time()
            return started

    return TimedRayStart


def search(name: str, url: str, n: int, conc: int, runner, *extra: str) -> tuple[float, list, float]:
    """(wall seconds, per trial the work spans of its reports, start time) of one search."""
    from nas.search import run_search
    from nas.study.store import Store

    start = time.time()
    run_search(compose(f"study={name}", f"store.url={url}", f"n_trials={n}", f"ray.max_concurrent={conc}", *extra),
               trial_runner=runner, out=None)
    wall = time.time() - start
    store = Store(url)
    spans = [[(r.metrics["t0"], r.metrics["t1"]) for r in t.reports] for t in store.trials(name) if t.reports]
    store.close()
    return wall, spans, start


def readme_search(name: str, url: str, n: int, conc: int, overlap: bool) -> dict[str, float]:
    """The README search with Ray started by the search (overlapped or not); its timeline in seconds."""
    import nas.search.driver as driver
    from nas.search import validate
    from nas.search.runner import ProxyRunner

    setup = validate(compose(f"study={name}"))
    runner = Timed(ProxyRunner(setup.proxy, setup.task, setup.conf.budget_tokens, setup.conf.device))
    original, driver.RayStart = driver.RayStart, timed_ray_start(overlap)
    Timeline.moments = {}
    try:
        wall, spans, start = search(name, url, n, conc, runner, f"ray.num_cpus={conc}")
    finally:
        driver.RayStart = original
    m = Timeline.moments
    first_work = min(t0 for trial in spans for t0, _ in trial)
    ready = m["driver_ready"]
    lost = lost_slot_seconds(spans, ready, conc)
    end = max(t1 for trial in spans for _, t1 in trial)
    return {"wall": wall, "prepare": ready - start, "ray_up": m["ray_ready"] - m["ray_start"],
            "blocked": m["ray_ready"] - ready, "exposed": first_work - ready, "lost": lost,
            "share": lost / ((end - ready) * conc), "work": sum(t1 - t0 for trial in spans for t0, t1 in trial)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noop-trials", type=int, default=16)
    parser.add_argument("--tiny-trials", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    conc = args.concurrency
    tmp = tempfile.mkdtemp(prefix="nas-overhead-")
    url = f"sqlite:///{tmp}/nas.db"
    base = ("sampler=random", "pruner=none", "adequacy=skip")  # orchestration only: no proxy adequacy training
    search("warmup", url, 2, conc, Noop(), *base, f"ray.num_cpus={conc}")  # a Ray of its own; warms file caches
    runs = {overlap: readme_search(f"readme_{'overlap' if overlap else 'serial'}", url, args.tiny_trials, conc,
                                   overlap) for overlap in (False, True)}
    ray.init(num_cpus=conc, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    search("warmup_noop", url, 2, conc, Noop(), *base)  # first worker processes and imports
    # best of three of each: other processes on the machine only ever add time
    short = min(search(f"noop_a{i}", url, 4, conc, Noop(), *base)[0] for i in range(3))
    long = min(search(f"noop_b{i}", url, 4 + args.noop_trials, conc, Noop(), *base)[0] for i in range(3))
    ray.shutdown()
    per_trial = (long - short) / args.noop_trials
    fixed = short - 4 * per_trial

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, load "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; concurrency {conc}")
    print(f"{'README search, Ray started':<34}{'wall_s':>8}{'prepare_s':>11}{'ray_up_s':>10}{'blocked_s':>11}"
          f"{'exposed_s':>11}{'share':>8}{'orch_share':>12}")
    for overlap, r in runs.items():
        label = "in the background (now)" if overlap else "when the driver is ready (before)"
        print(f"{label:<34}{r['wall']:>8.1f}{r['prepare']:>11.1f}{r['ray_up']:>10.2f}{r['blocked']:>11.2f}"
              f"{r['exposed']:>11.2f}{r['exposed'] / r['wall']:>8.3f}{r['share']:>12.3f}")
    print(f"{'case':<34}{'trials':>8}{'wall_s':>10}{'per_trial_s':>13}")
    print(f"{'no-op search, fixed cost':<34}{4:>8}{short:>10.2f}{fixed:>13.2f}")
    print(f"{'no-op search, marginal per trial':<34}{4 + args.noop_trials:>8}{long:>10.2f}{per_trial:>13.3f}")
    now = runs[True]
    print(f"overhead per_trial_s={per_trial:.3f} ray_startup_s={now['exposed']:.2f} "
          f"startup_share={now['exposed'] / now['wall']:.3f} orchestration_share={now['share']:.3f} "
          f"startup_share_before={runs[False]['exposed'] / runs[False]['wall']:.3f}")


if __name__ == "__main__":
    main()
