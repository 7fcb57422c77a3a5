"""Record / replay (nas/bench/replay.py): grid points, the table, token accounting, and replay == the real search."""

from __future__ import annotations

import itertools
import json
import math

import optuna
import pytest
import ray
import yaml

from nas.bench.replay import (
    Entry,
    Rung,
    Table,
    TableRunner,
    compose_search,
    config_key,
    export_table,
    grid_points,
    hv_curve,
    record,
    replay,
    tokens_to_reach,
)
from nas.profiles import REPO_ROOT
from nas.search import run_search
from nas.search.bridge import RUNG_SUFFIX
from nas.search.schema import PrunerConf, SamplerConf
from nas.study.dominance import dominates_by_margin
from nas.study.store import Store

SPACE = REPO_ROOT / "benchmarks" / "spaces" / "sparse_attn_grid.yaml"
STEPS = (128, 256, 512, 1024)
TOKENS_PER_STEP = 1024
WINDOWS, GLOBALS, GATES = (4, 6, 8, 11, 16), (0, 2, 4), ("none", "dynamic")


def curve(params: dict) -> tuple[Rung, ...]:
    """Synthetic learning curves that cross: small windows learn fast early, wide ones end better."""
    w = params.get("window", 64)
    final = 2.6 + 4.0 / w - 0.02 * params.get("global_tokens", 0) - 0.01 * (params.get("gate") == "dynamic")
    slope = 0.3 * w / 16
    return tuple(Rung(s, s * TOKENS_PER_STEP, final + slope * (STEPS[-1] / s - 1) / 7) for s in STEPS)


def synthetic_table(compute: dict[str, float] | None = None) -> Table:
    """Every configuration of the grid space with a synthetic curve; compute = the window share (or given)."""
    from nas.evaluation.proxy import ProxySpec, proxy_arch
    from nas.profiles import read_profile
    from nas.study.space import load

    proxy = read_profile("proxy", "tiny")[1]
    spec = load(SPACE, proxy_arch({}, ProxySpec.from_dict(proxy)))
    entries = [Entry(p, ((compute or {}).get(config_key(p), p.get("window", 64) / 64),), curve(p))
               for p in grid_points(spec)]
    return Table(yaml.safe_load(SPACE.read_text()), ("flops_ratio",), entries, {"proxy": proxy})


def test_grid_points_lists_each_configuration_once_baseline_first():
    points = synthetic_table().entries
    assert len(points) == len(WINDOWS) * len(GLOBALS) * len(GATES) + 1  # every local_global combination + dense
    assert points[0].params == {"attention": "dense"}
    expected = {config_key({"attention": "local_global", "window": w, "global_tokens": g, "gate": gate})
                for w, g, gate in itertools.product(WINDOWS, GLOBALS, GATES)}
    assert {config_key(e.params) for e in points[1:]} == expected


def test_table_round_trips_through_json(tmp_path):
    table = synthetic_table()
    table.save(tmp_path / "t.json")
    back = Table.load(tmp_path / "t.json")
    assert back.entries == table.entries and back.reference == table.reference
    json.loads((tmp_path / "t.json").read_text())  # plain JSON
    qualities = [e.quality for e in table.entries]
    # reference: the worst value + 10% of the range, per objective (quality, flops_ratio)
    assert table.reference[0] == pytest.approx(max(qualities) + 0.1 * (max(qualities) - min(qualities)))
    assert table.reference[1] == pytest.approx(1.0 + 0.1 * (1.0 - 4 / 64))


def test_bad_table_file_names_the_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match=r"t\.json: format=99 is invalid"):
        Table.load(path)


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2"])
def test_unpruned_replay_charges_the_full_budget_per_trial(sampler):
    table = synthetic_table()
    trials = replay(table, SamplerConf(name=sampler), PrunerConf(name="none"), seed=3, n_trials=12)
    assert len(trials) == 12 and all(t.state == "COMPLETE" for t in trials)
    assert trials[0].params == {"attention": "dense"}  # the baseline is asked first, as in a real search
    assert [t.tokens for t in trials] == [STEPS[-1] * TOKENS_PER_STEP] * 12
    tokens, hv = hv_curve(table, trials)
    assert tokens == [STEPS[-1] * TOKENS_PER_STEP * (i + 1) for i in range(12)]
    assert all(b >= a for a, b in zip(hv, hv[1:]))  # adding points never shrinks a hypervolume


def test_pruned_trials_are_charged_the_tokens_of_their_last_rung():
    """Oracle: the pruning rule applied by hand to the replayed order (min_dominators=1, margin 0)."""
    table = synthetic_table()
    storage = optuna.storages.InMemoryStorage()
    pruner = PrunerConf(name="pareto", margin=0.0, min_dominators=1, n_startup_trials=1)
    trials = replay(table, SamplerConf(name="random"), pruner, seed=0, n_trials=30, storage=storage)
    assert {t.state for t in trials} == {"COMPLETE", "PRUNED"}
    reached: list[tuple[Entry, int]] = []  # (entry, last step reported to the pruner) of earlier trials
    for t in trials:
        expected_step = STEPS[-1]
        for r in t.entry.rungs[:-1]:
            peers = [e for e, last in reached if last >= r.step]
            mine = (r.quality, *t.entry.compute)
            if peers and any(dominates_by_margin((next(p.quality for p in e.rungs if p.step == r.step), *e.compute),
                                                 mine, 0.0) for e in peers):
                expected_step = r.step
                break
        assert (t.step, t.state) == (expected_step, "COMPLETE" if expected_step == STEPS[-1] else "PRUNED")
        assert t.tokens == expected_step * TOKENS_PER_STEP
        reached.append((t.entry, expected_step if expected_step < STEPS[-1] else STEPS[-2]))
    rungs = optuna.load_study(study_name="replay" + RUNG_SUFFIX, storage=storage)
    for t, frozen in zip(trials, rungs.trials):  # the Optuna record of the rung study agrees
        assert frozen.state.name == t.state
        assert max(frozen.intermediate_values) == min(t.step, STEPS[-2])


def test_budget_mode_stops_once_the_budget_is_spent():
    table = synthetic_table()
    budget = 10 * STEPS[-1] * TOKENS_PER_STEP
    trials = replay(table, SamplerConf(name="tpe"), PrunerConf(name="median"), seed=1, budget_tokens=budget)
    spent = [sum(t.tokens for t in trials[: i + 1]) for i in range(len(trials))]
    assert spent[-1] >= budget > spent[-2]
    assert len(trials) > 10  # pruned trials cost less, so the same budget buys more of them


def test_tokens_to_reach():
    assert tokens_to_reach([1, 2, 3], [0.1, 0.5, 0.9], 0.5) == 2.0
    assert tokens_to_reach([1, 2, 3], [0.1, 0.5, 0.9], 0.95) == math.inf


def test_replay_rejects_both_or_neither_stopping_rule():
    with pytest.raises(ValueError, match="exactly one of n_trials and budget_tokens"):
        replay(synthetic_table(), SamplerConf(), PrunerConf(), seed=0)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _compose(tmp_path, study: str, *overrides: str):
    return compose_search(["dashboard=false", "adequacy=skip", "progress=false", f"study={study}",
                           f"store.url=sqlite:///{tmp_path / 'r.db'}", "search_space=sparse_attn_grid",
                           "ray.max_concurrent=1", *overrides], spaces=SPACE.parent)


@pytest.fixture(scope="module")
def recorded(local_ray, tmp_path_factory) -> Table:
    """A recording of the synthetic curves through the real search (compute from its cost model), exported."""
    tmp = tmp_path_factory.mktemp("rec")
    cfg = _compose(tmp, "rec", "pruner=none", "sampler=random", "n_trials=31")
    record(cfg, str(SPACE), out=None, trial_runner=TableRunner(synthetic_table()))
    return export_table(f"sqlite:///{tmp / 'r.db'}", "rec", yaml.safe_load(SPACE.read_text()))


def test_record_then_export_gives_every_configuration_with_its_curve(recorded):
    synthetic = synthetic_table()
    assert len(recorded.entries) == len(synthetic.entries)
    for e in recorded.entries:
        assert e.rungs == synthetic.lookup(e.params).rungs
    by = {config_key(e.params): e.compute[0] for e in recorded.entries}
    dense = by[config_key({"attention": "dense"})]
    assert dense == pytest.approx(1.0)  # flops_ratio from the real cost model: the baseline is the unit
    w4 = by[config_key({"attention": "local_global", "window": 4, "global_tokens": 0, "gate": "none"})]
    w16 = by[config_key({"attention": "local_global", "window": 16, "global_tokens": 0, "gate": "none"})]
    assert w4 < w16 < dense


def test_record_requires_pruner_none(tmp_path):
    cfg = _compose(tmp_path, "x", "pruner=pareto", "n_trials=31")
    with pytest.raises(ValueError, match="pruner='pareto' is invalid for a recording"):
        record(cfg, str(SPACE))


@pytest.mark.parametrize("sampler,pruner", [("tpe", "pareto"), ("nsga2", "successive_halving"),
                                            ("random", "hyperband")])
def test_replayed_study_equals_the_real_search_on_the_same_table(recorded, tmp_path, sampler, pruner):
    """The real search (Ray Tune, store, RDB study) with a runner that reads the table vs the replay."""
    n = 14
    probe = _compose(tmp_path, "probe", f"sampler={sampler}", f"pruner={pruner}")
    seed = next(s for s in range(5, 40)  # a seed whose study both completes and prunes trials
                if {t.state for t in replay(recorded, SamplerConf(**probe.sampler), PrunerConf(**probe.pruner),
                                            seed=s, n_trials=n, study="probe")} == {"COMPLETE", "PRUNED"})
    cfg = _compose(tmp_path, "real", f"sampler={sampler}", f"pruner={pruner}", f"n_trials={n}", f"seed={seed}")
    run_search(cfg, trial_runner=TableRunner(recorded), out=None, space_source=str(SPACE))
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    real = [(t.number, t.params, t.state, t.reports[-1].tokens) for t in store.trials("real")]
    store.close()
    conf = cfg.sampler, cfg.pruner
    trials = replay(recorded, SamplerConf(**conf[0]), PrunerConf(**conf[1]), seed=seed, n_trials=n, study="real")
    assert [(t.number, t.params, t.state, t.tokens) for t in trials] == real
    assert {t.state for t in trials} == {"COMPLETE", "PRUNED"}  # the comparison covers both outcomes


def test_record_refuses_a_study_of_another_space_before_queueing(tmp_path):
    cfg = _compose(tmp_path, "x", "pruner=none", "n_trials=31")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.create_study("x", {}, {"name": "other"}, "another-digest")
    store.close()
    with pytest.raises(ValueError, match="study='x' already exists .* with another search space"):
        record(cfg, str(SPACE))
    assert "x" not in optuna.get_all_study_names(f"sqlite:///{tmp_path / 'r.db'}")  # nothing queued
