"""The proxy's seed noise on a task: the dense baseline's final quality at NOISE_SEEDS seeds, measured once per
(proxy, task, budget) and cached under trials_db/noise/ so that a second study of the same proxy and task pays
nothing; stored with each study (its adequacy record) as the tie margin of its front (nas.study.view).

The adequacy check trains the dense baseline at the study's seed anyway; the other seeds train beside it, each in
a process of its own (`NoiseJob`), so that on two cores the check takes about 1.5x its one-seed time, not 3x.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from typing import Any

from nas.evaluation.data import TaskSpec
from nas.evaluation.proxy import ProxySpec
from nas.profiles import REPO_ROOT

NOISE_SEEDS = 3  # the dense baseline's seeds: the study's seed and the next two
NOISE_DIR = Path(os.environ.get("NAS_NOISE_DIR") or REPO_ROOT / "trials_db" / "noise")  # env: tests keep their own


@dataclass
class SeedNoise:
    """The dense baseline's final quality per seed, their standard deviation, and the front's tie margin."""

    proxy: str
    task: str
    budget_tokens: int
    seeds: list[int]
    qualities: list[float]
    sd: float  # sample standard deviation of one seed's quality (ddof 1)
    seeds_per_trial: int  # proxy.seeds: a trial's quality is the mean of this many seeds
    margin: float  # nas.study.view.tie_margin(sd, seeds_per_trial)
    key: str  # the cache key: digest of (proxy sizes and recipe, task, budget, seeds)
    cached: bool = False  # read from trials_db/noise/ rather than measured for this study
    wall_s: float = 0.0  # the measurement's wall time (when measured)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def noise_key(proxy: ProxySpec, task: TaskSpec, budget_tokens: int, seeds: list[int]) -> str:
    """Identity of a measurement: the proxy's sizes and recipe (not its name, not proxy.seeds), the task (not its
    name), the token budget and the seeds."""
    p = {k: v for k, v in asdict(proxy).items() if k not in ("name", "seeds")}
    t = {k: v for k, v in task.to_dict().items() if k != "name"}
    blob = json.dumps({"proxy": p, "task": t, "budget_tokens": budget_tokens, "seeds": seeds}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def from_qualities(proxy: ProxySpec, task: TaskSpec, budget_tokens: int, by_seed: dict[int, float], key: str,
                   wall_s: float = 0.0) -> SeedNoise:
    """The noise record of measured qualities (seed -> final quality)."""
    from nas.study.view import tie_margin

    seeds = sorted(by_seed)
    qualities = [float(by_seed[s]) for s in seeds]
    sd = statistics.stdev(qualities) if len(qualities) > 1 else math.nan
    return SeedNoise(proxy.name, task.name, budget_tokens, seeds, qualities, sd, proxy.seeds,
                     tie_margin(sd, proxy.seeds), key, wall_s=wall_s)


def read_cached(proxy: ProxySpec, task: TaskSpec, budget_tokens: int, seed: int, root: Path | None = None
                ) -> SeedNoise | None:
    """The cached measurement for (proxy, task, budget, seeds from `seed`), its margin at this proxy.seeds; None
    when there is none (or it cannot be read)."""
    seeds = list(range(seed, seed + NOISE_SEEDS))
    key = noise_key(proxy, task, budget_tokens, seeds)
    path = (NOISE_DIR if root is None else root) / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        found = from_qualities(proxy, task, budget_tokens, {int(s): float(q) for s, q in
                                                             zip(data["seeds"], data["qualities"])}, key)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return replace(found, cached=True, wall_s=float(data.get("wall_s", 0.0)))


def write_cache(noise: SeedNoise, root: Path | None = None) -> Path:
    """Save a measurement under `root` (default trials_db/noise/) atomically; its path."""
    root = NOISE_DIR if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{noise.key}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(noise.to_dict(), indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def dense_quality(knobs: dict[str, Any], proxy: ProxySpec, task: TaskSpec, budget_tokens: int | None, seed: int,
                  threads: int, device: str, cache_dir: str | Path | None) -> float:
    """The final quality of one proxy run of `knobs` at `seed` (one process's work)."""
    from nas.evaluation.proxy import train_proxy
    from nas.evaluation.scoring import quality

    *_, last = train_proxy(knobs, proxy, task, budget_tokens=budget_tokens, seed=seed, threads=threads,
                           device=device, cache_dir=cache_dir)
    return quality(last, task)


class NoiseJob:
    """The seed-noise measurement of a new study: cached, or the extra seeds training in worker processes while
    the caller trains the study's own seed (the adequacy check); `finish` joins them."""

    def __init__(self, knobs: dict[str, Any], proxy: ProxySpec, task: TaskSpec, budget_tokens: int | None, seed: int,
                 *, threads: int = 1, device: str = "auto", cache_dir: str | Path | None = None,
                 root: Path | None = None, train: bool = True) -> None:
        self.proxy, self.task, self.seed, self.root = proxy, task, seed, root
        self.budget = proxy.budget_tokens if budget_tokens is None else budget_tokens
        self.start = time.perf_counter()
        self.cached = read_cached(proxy, task, self.budget, seed, root)
        self.futures: dict[int, AsyncResult] = {}
        self.pool: Pool | None = None
        if self.cached is None and train:
            extra = list(range(seed + 1, seed + NOISE_SEEDS))
            self.pool = multiprocessing.get_context("spawn").Pool(len(extra))
            self.futures = {s: self.pool.apply_async(dense_quality, (knobs, proxy, task, budget_tokens, s, threads,
                                                                     device, cache_dir)) for s in extra}

    def finish(self, own_quality: float | None) -> SeedNoise | None:
        """The measurement: cached, or the study seed's `own_quality` with the extra seeds' (then cached); None
        when nothing is cached and nothing was trained (adequacy=skip)."""
        if self.cached is not None:
            return self.cached
        if self.pool is None or own_quality is None:
            self.close()
            return None
        try:
            by_seed = {self.seed: own_quality, **{s: f.get() for s, f in self.futures.items()}}
            self.pool.close()  # every result is in: the workers end on their own
            self.pool.join()
            self.pool = None
        finally:
            self.close()
        key = noise_key(self.proxy, self.task, self.budget, sorted(by_seed))
        noise = from_qualities(self.proxy, self.task, self.budget, by_seed, key, time.perf_counter() - self.start)
        write_cache(noise, self.root)
        return noise

    def close(self) -> None:
        """Stop the workers (a failed or interrupted check leaves none behind)."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
