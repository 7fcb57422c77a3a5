"""Record once, replay many times: a search space's complete learning curves as a table, and studies run on it.

Record: every configuration of a finite (discretised) space is queued in a real search with `pruner=none`, so
each trains to the full budget and the store keeps every rung; `export_table` turns the store's rows into a
small JSON table. Replay: the real Optuna samplers and pruners of the search (`nas.search.bridge`) ask, report
and tell against the table instead of training (no Ray, no torch), a study per seed in Optuna's in-memory
storage; each trial is charged the tokens it trained before it stopped.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import optuna
from omegaconf import DictConfig

from nas.checks import check_int
from nas.model.config import ArchConfig
from nas.search.bridge import OptunaBridge, SpaceExhausted, make_pruner, make_sampler, make_storage
from nas.search.schema import PrunerConf, SamplerConf
from nas.study.dominance import hypervolume
from nas.study.space import SearchSpec, SpaceError
from nas.study.store import Store
from nas.study.view import config_key, hypervolume_history, reference_point

FORMAT = 1  # the table file's format version

__all__ = ["config_key"]  # re-exported: a configuration's identity, owned by nas.study.view


def grid_points(spec: SearchSpec) -> list[dict[str, Any]]:
    """Every distinct configuration of a finite space (active parameters only), the baseline first.

    A conditional parameter exists only where its conditions hold, so the full product repeats configurations
    (every window with attention=dense is the one dense model); each is listed once, in grid order.
    """
    for p in spec.params:
        if p.type == "float" and not p.step:
            raise SpaceError(f"{spec.source}: params.{p.name} is a continuous float: a recorded table needs a "
                             "finite space (give it a step, or make it categorical)")
    points = {config_key(spec.baseline): dict(spec.baseline)}
    grid = [p.grid_values() for p in spec.params]
    for combo in itertools.product(*grid):
        values: dict[str, Any] = {}
        for p, value in zip(spec.params, combo):
            if p.active(values):
                values[p.name] = value
        points.setdefault(config_key(values), values)
    return list(points.values())


# ---- record ------------------------------------------------------------------------------------------------
def compose_search(overrides: Sequence[str], spaces: Path | None = None) -> DictConfig:
    """conf/search.yaml composed with Hydra overrides; `spaces` stands in for the search_spaces/ folder."""
    from hydra import compose, initialize_config_dir

    from nas.profiles import conf_dir
    from nas.search import schema

    saved = os.environ.get("NAS_SEARCH_SPACES")
    if spaces is not None:
        os.environ["NAS_SEARCH_SPACES"] = str(spaces)
    try:
        schema.register()  # the spaces folder's files become options of the search_space group
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return compose("search", overrides=list(overrides))
    finally:
        if saved is None:
            os.environ.pop("NAS_SEARCH_SPACES", None)
        else:
            os.environ["NAS_SEARCH_SPACES"] = saved


def record(cfg: DictConfig, space_source: str, out: TextIO | None = None, trial_runner: Any = None) -> Any:
    """Train every configuration of the (finite) space once to the full budget with the real search.

    The configurations are queued in the study's Optuna queue (the search queues the baseline itself), the
    pruner is none, and n_trials covers them all; an interrupted recording resumes (the queue is kept).
    `trial_runner` stands in for the proxy trainer (tests).
    """
    from nas.search import run_search, validate

    setup = validate(cfg, space_source)
    if setup.conf.pruner.name != "none":
        raise ValueError(f"pruner={setup.conf.pruner.name!r} is invalid for a recording: expected none (every "
                         "configuration trains to the full budget)")
    points = grid_points(setup.spec)
    if setup.conf.n_trials != len(points):
        raise ValueError(f"n_trials={setup.conf.n_trials} is invalid for this recording: expected {len(points)}, "
                         f"the configurations of {space_source}")
    store = Store(setup.url)
    try:
        existing = store.study(setup.conf.study)
    finally:
        store.close()
    if existing is not None and existing.space_hash != setup.spec.digest():
        raise ValueError(f"study={setup.conf.study!r} already exists in {setup.url} with another search space: "
                         "choose another study=NAME or store.url")
    study = optuna.create_study(storage=make_storage(setup.url), study_name=setup.conf.study,
                                directions=["minimize"] * (1 + len(setup.compute_keys)), load_if_exists=True)
    for params in points[1:]:
        study.enqueue_trial(params, skip_if_exists=True)
    return run_search(cfg, trial_runner=trial_runner, out=out, space_source=space_source)


# ---- the table ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rung:
    """One recorded report: training step, tokens trained so far, quality (lower is better)."""

    step: int
    tokens: int
    quality: float


@dataclass(frozen=True)
class Entry:
    """One configuration of the table: its parameters, compute objectives and learning curve (rungs in order)."""

    params: dict[str, Any]
    compute: tuple[float, ...]
    rungs: tuple[Rung, ...]

    @property
    def quality(self) -> float:
        """The final rung's quality (the value a completed trial is told)."""
        return self.rungs[-1].quality

    @property
    def vector(self) -> tuple[float, ...]:
        """(quality, *compute): the configuration in objective space."""
        return (self.quality, *self.compute)


@dataclass
class Table:
    """A recorded table: the space, the compute objectives' names, one entry per configuration and provenance."""

    space: dict[str, Any]
    compute_keys: tuple[str, ...]
    entries: list[Entry]
    meta: dict[str, Any] = field(default_factory=dict)
    reference: tuple[float, ...] = ()  # hypervolume reference point (quality, *compute); empty: the entries'
    # nas.study.view.reference_point

    def __post_init__(self) -> None:
        self.by_key = {config_key(e.params): e for e in self.entries}
        if len(self.by_key) != len(self.entries):
            raise ValueError("a recorded table lists a configuration twice")
        self.spec = _spec(self.space, self.meta.get("proxy"))
        self.by_knobs = {config_key(self.spec.knobs(e.params)): e for e in self.entries}
        if not self.reference:
            self.reference = reference_point([e.vector for e in self.entries]) or ()

    def lookup(self, params: Mapping[str, Any]) -> Entry:
        """The entry of a sampled configuration; KeyError naming it when the table lacks it."""
        try:
            return self.by_key[config_key(params)]
        except KeyError:
            raise KeyError(f"configuration {config_key(params)} is not in the recorded table") from None

    def lookup_knobs(self, knobs: Mapping[str, Any]) -> Entry:
        """The entry whose configuration has these (nested) knobs."""
        try:
            return self.by_knobs[config_key(knobs)]
        except KeyError:
            raise KeyError(f"knobs {config_key(knobs)} are not in the recorded table") from None

    @property
    def full_tokens(self) -> int:
        """Tokens of one trial trained to the full budget (the largest last-rung tokens)."""
        return max(e.rungs[-1].tokens for e in self.entries)

    def hypervolume(self, entries: Sequence[Entry]) -> float:
        """Hypervolume of completed entries' (quality, *compute) against the table's reference point."""
        return hypervolume([e.vector for e in entries], self.reference)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {"format": FORMAT, "meta": self.meta, "space": self.space, "compute_keys": list(self.compute_keys),
                "reference": list(self.reference),
                "entries": [{"params": e.params, "compute": list(e.compute),
                             "rungs": [[r.step, r.tokens, r.quality] for r in e.rungs]} for e in self.entries]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "table") -> "Table":
        """Inverse of to_dict; ValueError naming `source` and the key when malformed."""
        if data.get("format") != FORMAT:
            raise ValueError(f"{source}: format={data.get('format')!r} is invalid: expected {FORMAT}")
        try:
            entries = [Entry(dict(e["params"]), tuple(float(c) for c in e["compute"]),
                             tuple(Rung(int(s), int(t), float(q)) for s, t, q in e["rungs"]))
                       for e in data["entries"]]
            return cls(dict(data["space"]), tuple(data["compute_keys"]), entries, dict(data.get("meta", {})),
                       tuple(float(r) for r in data.get("reference", ())))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source}: not a recorded table ({type(err).__name__}: {err})") from err

    def save(self, path: str | Path) -> None:
        """Write the table as JSON (one entry per line: small diffs in git)."""
        d = self.to_dict()
        entries = d.pop("entries")
        head = json.dumps(d, sort_keys=True)[:-1]
        lines = ",\n".join(json.dumps(e, sort_keys=True) for e in entries)
        Path(path).write_text(f'{head}, "entries": [\n{lines}\n]}}\n')

    @classmethod
    def load(cls, path: str | Path) -> "Table":
        """Read a table written by save."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read a recorded table ({err})") from err
        return cls.from_dict(data, str(path))


def export_table(url: str, study: str, space: Mapping[str, Any]) -> Table:
    """The recorded table of a pruner=none study in the store: one entry per completed configuration.

    `space` is the search-space mapping (its YAML file) the study ran on, checked against the stored digest
    (the store's own copy of a space is not re-parseable: it drops bounds equal to 0).
    """
    from nas.study.objectives import stored_compute_keys

    store = Store(url)
    try:
        row = store.study(study)
        if row is None:
            raise ValueError(f"study={study!r} is not in {url}")
        trials = store.trials(study)
    finally:
        store.close()
    if _spec(space, row.config.get("proxy")).digest() != row.space_hash:
        raise ValueError(f"study={study!r} in {url} ran on another search space than {space.get('name')!r}")
    keys = stored_compute_keys(row.config, (t.objectives for t in trials))
    entries: dict[str, Entry] = {}
    for t in trials:
        if t.state != "COMPLETE":
            continue
        objectives = t.objectives
        assert objectives is not None, "a COMPLETE trial has its objectives"
        rungs = tuple(Rung(r.step, r.tokens, float(r.metrics["quality"])) for r in t.reports)
        entries.setdefault(config_key(t.params), Entry(dict(t.params), tuple(float(objectives[k]) for k in keys),
                                                       rungs))
    incomplete = [t.number for t in trials if t.state != "COMPLETE" and config_key(t.params) not in entries]
    if incomplete:
        raise ValueError(f"study={study!r}: trials {incomplete} did not complete; resume the recording first")
    config = row.config
    meta = {"study": study, "code_version": row.code_version, "recorded": row.created.isoformat(),
            "proxy": config.get("proxy"), "task": config.get("task"), "target": config.get("target", {}).get("name"),
            "hardware": config.get("hardware", {}).get("name"), "seed": config.get("seed"),
            "budget_tokens": config.get("budget_tokens"), "machine": machine(),
            "trial_s": {config_key(t.params): t.duration_s for t in trials if t.state == "COMPLETE"}}
    return Table(dict(space), keys, list(entries.values()), meta)


def _spec(space: Mapping[str, Any], proxy: Mapping[str, Any] | None) -> SearchSpec:
    """The table's search space, validated against the sizes of the proxy it was recorded on."""
    from nas.evaluation.proxy import ProxySpec, proxy_arch
    from nas.study.space import parse

    if not isinstance(proxy, Mapping):
        raise ValueError(f"table space {space.get('name')!r}: the table names no proxy (its `meta.proxy`), so its "
                         "space cannot be checked; re-record it")
    return parse(dict(space), f"table space {space.get('name')!r}", proxy_arch({}, ProxySpec.from_dict(dict(proxy))))


def machine() -> str:
    """One line naming the machine a result was measured on."""
    return f"{platform.node() or 'host'} {platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}"


# ---- replay ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableRunner:
    """A TrialRunner for the real search that reports a configuration's recorded rungs instead of training."""

    table: Table

    def __call__(self, knobs: dict[str, Any], *, arch: ArchConfig | None, seed: int, threads: int
                 ) -> Iterator[dict[str, Any]]:
        entry = self.table.lookup_knobs(knobs)
        for i, r in enumerate(entry.rungs):
            yield {"step": r.step, "tokens": r.tokens, "quality": r.quality, "final": i == len(entry.rungs) - 1,
                   "metrics": {}}


@dataclass(frozen=True)
class ReplayTrial:
    """One replayed trial: configuration, outcome, the last rung it trained to and the tokens it is charged."""

    number: int
    params: dict[str, Any]
    state: str  # COMPLETE or PRUNED
    step: int
    tokens: int
    entry: Entry


def replay(table: Table, sampler: SamplerConf, pruner: PrunerConf, seed: int, *, n_trials: int | None = None,
           budget_tokens: int | None = None, max_trials: int = 1000, study: str = "replay",
           storage: Any = None) -> list[ReplayTrial]:
    """One study on the table: ask, report every rung but the last, tell, as the search driver does.

    The study stops after n_trials trials, or once the trials' charged tokens reach budget_tokens (a pruned
    trial costs the tokens of its last rung), at most max_trials. The dense baseline is asked first. The
    Optuna storage is in memory unless given (a real search's RDB storage, for comparisons).
    """
    if (n_trials is None) == (budget_tokens is None):
        raise ValueError("replay: give exactly one of n_trials and budget_tokens")
    check_int("n_trials" if n_trials is not None else "budget_tokens", n_trials or budget_tokens)
    spec = table.spec
    bridge = OptunaBridge(storage or optuna.storages.InMemoryStorage(), study, spec,
                          make_sampler(sampler, seed, spec), make_pruner(pruner), table.compute_keys,
                          _table_evaluator(table), lambda cost: None)
    bridge.enqueue_baseline()
    trials: list[ReplayTrial] = []
    spent = 0
    tried: set[str] = set()
    while len(trials) < min(n_trials or max_trials, max_trials) and (budget_tokens is None or spent < budget_tokens):
        if len(tried) == len(table.entries):  # every configuration trained: a search would only get repeats
            break
        try:
            s = bridge.ask(on_infeasible=lambda s, reason: None)
        except SpaceExhausted:
            break
        assert s is not None, "one trial at a time, each finished before the next ask: ask never has to wait"
        tried.add(config_key(s.params))
        entry = table.lookup(s.params)
        last = entry.rungs[-1]
        for r in entry.rungs[:-1]:  # the final rung is told, not reported (nas.search.tune_parts.PruningScheduler)
            if bridge.report(s, r.step, r.quality):
                last = r
                break
        bridge.finish(s, {"quality": last.quality, "final": last is entry.rungs[-1]}, None)
        trials.append(ReplayTrial(s.number, dict(s.params), s.state, last.step, last.tokens, entry))
        spent += last.tokens
    return trials


def _table_evaluator(table: Table):
    """The bridge's evaluator on a table: knobs -> (no archs, the recorded compute objectives as the cost)."""
    def evaluate(knobs: dict[str, Any]) -> tuple[None, dict, dict]:
        entry = table.lookup_knobs(knobs)
        return None, {}, dict(zip(table.compute_keys, entry.compute))
    return evaluate


def hv_curve(table: Table, trials: Sequence[ReplayTrial]) -> tuple[list[int], list[float]]:
    """Cumulative charged tokens and the hypervolume of the completed trials after each trial (against the
    table's reference point)."""
    return hypervolume_history(((t.tokens, t.entry.vector if t.state == "COMPLETE" else None) for t in trials),
                               table.reference)


def tokens_to_reach(tokens: Sequence[int], hv: Sequence[float], target: float) -> float:
    """The cumulative tokens at which the hypervolume first reaches `target`; inf when it never does."""
    return next((float(t) for t, h in zip(tokens, hv) if h >= target * (1 - 1e-12)), math.inf)
