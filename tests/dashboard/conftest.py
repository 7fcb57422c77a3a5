"""A store seeded once per session: alpha, beta (time_ratio), gamma (two compute objectives), an HTML-like name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dashboard_seed import BETA, EVIL, GAMMA, GAMMA_KEYS, KNOWN, Seed, lg, seed_study

from nas.dashboard.reader import StoreReader


@dataclass(frozen=True)
class Seeded:
    """The seeded store's URL and file."""

    url: str
    path: Path


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """alpha: the KNOWN trials; beta: a second search; EVIL: a name and knobs that look like HTML."""
    path = tmp_path_factory.mktemp("store") / "nas.db"
    url = f"sqlite:///{path}"
    seed_study(url, "alpha", KNOWN)
    seed_study(url, "beta", BETA, compute_key="time_ratio")
    seed_study(url, EVIL, [Seed(0, "COMPLETE", {"attention": "dense"}, 1.0, 1.0),
                           Seed(1, "COMPLETE", lg(16), 1.2, 0.5)], with_optuna=False)
    seed_study(url, "gamma", GAMMA, compute_key=GAMMA_KEYS)
    return Seeded(url, path)


@pytest.fixture(scope="session")
def reader(seeded: Seeded) -> Iterator[StoreReader]:
    """A read-only reader of the seeded store."""
    r = StoreReader(seeded.url)
    yield r
    r.close()
