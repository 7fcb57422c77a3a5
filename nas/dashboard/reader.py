"""What the dashboard draws: studies and trials read from the store (read-only) as plain views."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from nas.study.objectives import QUALITY, stored_compute_keys
from nas.study.store import Report, shown_url
from nas.study.view import is_baseline, trial_objectives, vector

ABSOLUTE_OF = {  # compute ratio -> the absolute cost figure it divides by the dense baseline's
    "flops_ratio": "step_flops",
    "time_ratio": "step_time_s",
    "memory_ratio": "memory_bytes",
    "unique_params_ratio": "params_unique",
    "kv_cache_ratio": "kv_cache_bytes",
    "prefill_time_ratio": "prefill_time_s",
    "decode_time_ratio": "decode_time_s",
}


class DashboardError(ValueError):
    """Bad dashboard input: unknown study, empty or unreachable store, bad option."""


@dataclass(frozen=True)
class TrialView:
    """One trial as drawn: knobs, objectives (quality, compute ratios), absolute costs and its learning curve."""

    number: int
    state: str  # RUNNING | COMPLETE | PRUNED | FAIL
    params: dict[str, Any]
    quality: float | None  # final objective (COMPLETE), the last rung's (PRUNED, RUNNING), None (FAIL); lower is better
    compute: tuple[float, ...] | None  # the study's compute ratios to dense (its compute_keys order); lower is better
    cost: dict[str, Any] = field(default_factory=dict)
    reports: tuple[Report, ...] = ()
    is_baseline: bool = False
    error: str | None = None
    duration_s: float | None = None

    @property
    def tokens(self) -> int:
        """Proxy training tokens this trial consumed (its last report)."""
        return self.reports[-1].tokens if self.reports else 0

    @property
    def vector(self) -> tuple[float, ...] | None:
        """(quality, *compute) when both are known: the trial in objective space."""
        return vector(self.quality, self.compute)

    @property
    def drawn(self) -> tuple[float, ...]:
        """(quality, *compute) of a trial StudyView.drawable returned: both known."""
        v = self.vector
        if v is None:
            raise ValueError(f"trial {self.number} has no quality and compute to draw")
        return v


@dataclass(frozen=True)
class StudyView:
    """One study as drawn: its objectives' names, its trials by number, its adequacy check and latest fidelity."""

    name: str
    compute_keys: tuple[str, ...]  # primary first
    quality_label: str
    trials: tuple[TrialView, ...]
    space: str = ""
    adequacy: dict[str, Any] | None = None  # nas_study.adequacy
    fidelity: Any = None  # the latest nas.study.store.Fidelity
    n_fidelity: int = 0  # fidelity checks stored

    @property
    def labels(self) -> list[str]:
        """Axis labels of the objectives: the quality label, then the compute keys."""
        return [self.quality_label, *self.compute_keys]

    def by_state(self, state: str) -> list[TrialView]:
        """Trials in `state`."""
        return [t for t in self.trials if t.state == state]

    def drawable(self, state: str = "COMPLETE") -> list[TrialView]:
        """Trials in `state` with a quality and every compute objective (what the objective plots show)."""
        return [t for t in self.by_state(state) if t.vector is not None]

    def counts(self) -> dict[str, int]:
        """Number of trials per state."""
        return {s: len(self.by_state(s)) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}

    def digest(self) -> str:
        """A hash of everything drawn (changes when a trial lands or reports)."""
        rows = [(t.number, t.state, t.quality, t.compute, len(t.reports)) for t in self.trials]
        extra = [self.adequacy, self.n_fidelity]
        return hashlib.sha256(json.dumps([self.name, rows, extra], default=str).encode()).hexdigest()[:16]


def quality_label(config: dict[str, Any]) -> str:
    """'quality (w*term + ...)' from the study's task objective, lower is better."""
    objective = (config.get("task") or {}).get("objective") or {}
    terms = " + ".join(f"{w:g}*{t}" if w != 1 else str(t) for t, w in objective.items())
    return f"quality ({terms})" if terms else QUALITY


def trial_view(t: Any, compute_keys: tuple[str, ...], baseline: dict[str, Any] | None) -> TrialView:
    """A store Trial as a TrialView (its objectives read by nas.study.view.trial_objectives)."""
    reports = tuple(Report(r.step, r.tokens, dict(r.metrics)) for r in t.reports)
    quality, compute = trial_objectives(t, compute_keys)
    return TrialView(t.number, t.state, dict(t.params), quality, compute, dict(t.cost or {}), reports,
                     is_baseline(t.params, baseline), t.error, t.duration_s)


class StoreReader:
    """Read-only access to the store's studies, trials and the Optuna studies in the same database."""

    def __init__(self, url: str) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        from nas.study.store import Store, StoreError

        self.url = url
        try:
            self.store = Store(url, migrate=False)
            self.names = [s.name for s in self.store.studies()]
        except StoreError as err:
            raise DashboardError(str(err)) from err
        except SQLAlchemyError as err:
            if _missing_tables(err):
                self.names = []
            else:
                first = str(getattr(err, "orig", err)).strip().splitlines()[0]
                raise DashboardError(f"store.url={shown_url(url)} is unreachable: {first}") from err
        if not self.names:
            raise DashboardError(f"store.url={shown_url(url)} holds no studies: run python -m nas.search first")

    def close(self) -> None:
        """Release connections."""
        self.store.close()

    def check(self, names: list[str]) -> None:
        """Raise a one-line DashboardError for any name that is not a study in the store."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise DashboardError(f"study={unknown[0]!r} not found in {shown_url(self.url)}: known studies are "
                                 f"{', '.join(self.names)}")

    def study(self, name: str) -> StudyView:
        """The study's view, trials by number."""
        self.check([name])
        row = self.store.study(name)
        assert row is not None, "check() found the study"
        stored = self.store.trials(name)
        keys = stored_compute_keys(row.config or {}, (t.objectives for t in stored))
        baseline = (row.search_space or {}).get("baseline")
        trials = tuple(trial_view(t, keys, baseline) for t in stored)
        checks = self.store.fidelity_results(name)
        return StudyView(name, keys, quality_label(row.config or {}), trials,
                         str((row.search_space or {}).get("name") or ""), row.adequacy,
                         checks[-1] if checks else None, len(checks))

    def optuna_study(self, name: str) -> Any:
        """The Optuna study of the same name in the store's database, or None when it is not there."""
        from sqlalchemy import inspect, text

        engine = self.store.engine
        if "studies" not in inspect(engine).get_table_names():
            return None
        with engine.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM studies WHERE study_name = :n"), {"n": name}).first()
        if found is None:
            return None
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            return optuna.load_study(study_name=name, storage=self.url)
        except (RuntimeError, KeyError):  # an Optuna schema this version cannot read: no importance panel
            return None


def _missing_tables(err: Exception) -> bool:
    text = str(getattr(err, "orig", err)).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)
