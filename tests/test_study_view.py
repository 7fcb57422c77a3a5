"""nas.study.view: the one view of a study's results, on hand-built tiny studies, and its readers agreeing on it
(the search's summary, export, the dashboard, replay)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml

from nas.bench.replay import Entry, Rung, Table, hv_curve
from nas.dashboard.front_plot import front as dashboard_front
from nas.dashboard.hypervolume import hypervolume_history as dashboard_history
from nas.dashboard.reader import StoreReader
from nas.export.front import load_points
from nas.export.front import pareto_front as export_front
from nas.search.bridge import OptunaBridge
from nas.study import view as study_view
from nas.study.dominance import hypervolume
from nas.study.store import Store

optuna.logging.set_verbosity(optuna.logging.WARNING)

KEYS = ("flops_ratio", "memory_ratio")
DENSE = {"attention": "dense"}


def lg(window: int, g: int = 0) -> dict[str, Any]:
    """A configuration of benchmarks/spaces/sparse_attn_grid.yaml (replay's tables need real ones)."""
    return {"attention": "local_global", "window": window, "global_tokens": g, "gate": "none"}


def _table(entries: list[Entry], compute_keys: tuple[str, ...], reference: tuple[float, ...] = ()) -> Table:
    """A replay table of `entries` on the grid space, at the tiny proxy."""
    from nas.profiles import REPO_ROOT, read_profile

    space = yaml.safe_load((REPO_ROOT / "benchmarks" / "spaces" / "sparse_attn_grid.yaml").read_text())
    return Table(space, compute_keys, entries, {"proxy": read_profile("proxy", "tiny")[1]}, reference)


# number, state, params, quality, (flops, memory). By hand: 1 and 5 tie (different configurations: both stay);
# 3 repeats 1's configuration and point (the earliest, 1, stays); 4 is dominated by 1; 9 by 1 too (and its memory
# ratio is only in its cost); 7 is pruned, 8 failed. Front by (compute, quality, number): 6, 2, 1, 5, 0.
TRIALS = [
    (0, "COMPLETE", DENSE, 1.00, (1.0, 1.0)),
    (1, "COMPLETE", lg(16), 1.10, (0.5, 0.8)),
    (2, "COMPLETE", lg(8), 1.20, (0.3, 0.9)),
    (3, "COMPLETE", lg(16), 1.10, (0.5, 0.8)),
    (4, "COMPLETE", lg(11), 1.15, (0.5, 0.8)),
    (5, "COMPLETE", lg(6), 1.10, (0.5, 0.8)),
    (6, "COMPLETE", lg(4), 1.30, (0.3, 0.7)),
    (7, "PRUNED", lg(16, 2), 1.00, (0.1, 0.1)),
    (8, "FAIL", lg(8, 2), None, (0.2, 0.2)),
    (9, "COMPLETE", lg(4, 4), 1.50, (0.9, 0.95)),
]
FRONT = [6, 2, 1, 5, 0]


@dataclass(frozen=True)
class P:
    number: int
    params: dict[str, Any]
    vector: tuple[float, ...]


def test_config_key_is_canonical_and_the_one_every_reader_uses() -> None:
    import nas.bench.replay
    import nas.search.bridge

    a = {"window": 16, "attention": "local_global", "gate": "none"}
    b = {"gate": "none", "attention": "local_global", "window": 16}
    assert study_view.config_key(a) == study_view.config_key(b) == json.dumps(a, sort_keys=True, default=str)
    assert study_view.config_key(a) != study_view.config_key({**a, "window": 8})
    assert nas.bench.replay.config_key is study_view.config_key  # replay's tables and grid points
    assert nas.search.bridge.config_key is study_view.config_key  # the bridge's duplicate answers and front
    assert study_view.is_baseline({"attention": "dense"}, DENSE) and not study_view.is_baseline(lg(4), DENSE)
    assert not study_view.is_baseline(DENSE, None)  # a space without a baseline has none


def test_front_is_sorted_and_one_point_per_configuration() -> None:
    points = [P(n, params, (q, *c)) for n, state, params, q, c in TRIALS if state == "COMPLETE"]
    assert [p.number for p in study_view.front(points)] == FRONT
    # a later trial of a configuration that beats the earlier one is the one kept (the earlier is dominated)
    better = [P(0, lg(8), (1.2, 0.5)), P(1, lg(8), (1.1, 0.5)), P(2, DENSE, (1.0, 1.0))]
    assert [p.number for p in study_view.front(better)] == [1, 2]
    assert study_view.front([]) == []


def _seed(url: str) -> None:
    store = Store(url)
    config = {"objectives": {"compute": list(KEYS)}, "task": {"objective": {"bpb": 1.0}}}
    store.create_study("tiny", config, {"name": "tiny_space", "baseline": {"attention": "dense"}}, "0" * 64)
    for number, state, params, quality, compute in TRIALS:
        cost = dict(zip(KEYS, compute))
        store.start_trial("tiny", number, params, {}, cost=cost)
        store.add_report("tiny", number, 10, 1024 * (number + 1), {"quality": (quality or 2.0) + 0.25})
        if state != "FAIL":
            store.add_report("tiny", number, 20, 2048 * (number + 1), {"quality": quality})
        objectives = dict(zip(KEYS, compute)) if number != 9 else {"flops_ratio": compute[0]}  # 9: memory in cost
        if state == "COMPLETE":
            objectives["quality"] = quality
        store.finish_trial("tiny", number, state, objectives=objectives)
    store.close()


def test_the_readers_agree_on_the_front_baseline_and_vectors(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sv.db'}"
    _seed(url)
    store = Store(url)
    try:
        sp = load_points(store, "tiny")
    finally:
        store.close()
    assert [p.number for p in export_front(sp.points)] == FRONT
    assert sp.dense_quality() == 1.0
    assert {p.number: p.vector for p in sp.points}[9] == (1.5, 0.9, 0.95)  # memory read from the cost
    reader = StoreReader(url)
    try:
        view = reader.study("tiny")
    finally:
        reader.close()
    assert [t.number for t in dashboard_front(view)] == FRONT
    assert [t.number for t in view.trials if t.is_baseline] == [0]
    by = {t.number: t for t in view.trials}
    assert by[9].vector == (1.5, 0.9, 0.95) and by[7].quality == 1.0 and by[8].quality is None
    assert {t.number: t.vector for t in view.drawable()} == {p.number: p.vector for p in sp.points}
    # the search's summary: the bridge's front over the Optuna study of the same trials
    study = optuna.create_study(directions=["minimize"] * 3)
    for _number, state, params, quality, compute in TRIALS:
        dists = {k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, state=optuna.trial.TrialState[state],
            values=[quality, *compute] if state == "COMPLETE" else None,
            intermediate_values={10: 2.0} if state == "PRUNED" else None))
    assert [t.number for t in OptunaBridge.front(SimpleNamespace(study=study))] == FRONT


def test_a_constant_objective_does_not_zero_the_hypervolume() -> None:
    """flops_ratio never varies: the reference lies REFERENCE_MARGIN * max(|worst|, 1) beyond it, not on it."""
    vectors = [(1.0, 0.5), (1.2, 0.5), (1.1, 0.5)]
    ref = study_view.reference_point(vectors)
    assert ref == pytest.approx((1.2 + 0.1 * 0.2, 0.5 + 0.1 * 1.0))
    assert hypervolume(vectors, ref) == pytest.approx((1.22 - 1.0) * (0.6 - 0.5))  # one box from the best point
    # replay's table takes the same rule (its recorded tables' references are unchanged where nothing is constant)
    entries = [Entry(lg(w), (c,), (Rung(10, 100, q),)) for w, (q, c) in zip((4, 8, 16), vectors)]
    table = _table(entries, ("flops_ratio",))
    assert table.reference == ref and table.hypervolume(entries) > 0
    ratio_varies = [(1.0, 0.5), (1.2, 1.0)]
    assert study_view.reference_point(ratio_varies) == pytest.approx((1.22, 1.05))  # worst + 10% of the range
    assert study_view.reference_point([]) is None


def test_hypervolume_history_counts_every_step_and_only_completed_points() -> None:
    ref = (2.0, 2.0)
    tokens, values = study_view.hypervolume_history([(10, (1.0, 1.0)), (5, None), (20, (0.5, 1.5))], ref)
    assert tokens == [10, 15, 35]
    assert values == pytest.approx([1.0, 1.0, 1.0 + 0.5 * 0.5])  # second point adds a 0.5 x 0.5 box
    assert study_view.hypervolume_history([(3, None)], None) == ([3], [0.0])


def test_dashboard_and_replay_histories_are_the_same_computation(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'sv.db'}"
    _seed(url)
    reader = StoreReader(url)
    try:
        view = reader.study("tiny")
    finally:
        reader.close()
    h = dashboard_history(view)
    finished = [t for t in view.trials if t.state != "RUNNING"]
    assert h.numbers == [t.number for t in finished]
    assert h.tokens == list(itertools.accumulate(t.tokens for t in finished))
    assert h.values[-1] == pytest.approx(hypervolume([t.vector for t in view.drawable()], h.reference))
    # replay: the same steps through hv_curve give the same numbers against the same reference
    done = [t for t in finished if t.state == "COMPLETE"]
    entries = {t.number: Entry(dict(t.params), t.compute, (Rung(20, t.tokens, t.quality),)) for t in done}
    unique = {study_view.config_key(e.params): e for e in entries.values()}  # a table lists a configuration once
    table = _table(list(unique.values()), KEYS, h.reference)
    trials = [SimpleNamespace(tokens=t.tokens, state=t.state, entry=entries.get(t.number)) for t in finished]
    tokens, values = hv_curve(table, trials)
    assert tokens == h.tokens and values == pytest.approx(h.values, rel=1e-12)


# ---- the quality noise: ties within the study's seed noise -------------------------------------------------------

# the precision search: fp8 at 2.470 "better" than fp32 at 2.481, with the tiny proxy's recorded seed
# noise on the capacity task (dense at seeds 0, 1, 2: 2.4813, 2.4551, 2.4571; benchmarks/results/fidelity_cpu.txt)
SEED_QUALITIES = [2.4813, 2.4551, 2.4571]


def _noise(qualities: list[float] = SEED_QUALITIES, seeds_per_trial: int = 1) -> dict[str, Any]:
    import statistics

    sd = statistics.stdev(qualities)
    return {"sd": sd, "qualities": qualities, "seeds": list(range(len(qualities))), "seeds_per_trial": seeds_per_trial,
            "margin": study_view.tie_margin(sd, seeds_per_trial), "cached": False}


def test_the_tie_margin_is_two_standard_errors_of_a_difference() -> None:
    sd = 0.0146  # sample sd of SEED_QUALITIES, by hand: mean 2.4645, deviations 0.0168, -0.0094, -0.0074
    assert _noise()["sd"] == pytest.approx(sd, abs=5e-5)
    assert study_view.tie_margin(sd) == pytest.approx(2 * 2 ** 0.5 * sd)
    assert study_view.tie_margin(sd, 4) == pytest.approx(2 ** 0.5 * sd)  # four seeds a trial: half the margin
    assert study_view.quality_margin({"noise": _noise()}) == pytest.approx(2 * 2 ** 0.5 * _noise()["sd"])
    assert study_view.quality_margin(None) == 0.0 and study_view.quality_margin({"mode": "skip"}) == 0.0


def test_the_front_keeps_points_within_noise_and_drops_one_beyond_it() -> None:
    margin = study_view.quality_margin({"noise": _noise()})  # 0.0412
    fp32 = P(0, {"precision": "fp32"}, (2.481, 1.0, 1.0))
    fp8 = P(1, {"precision": "fp8"}, (2.470, 0.5, 0.6))  # better and cheaper, within the noise
    bf16 = P(2, {"precision": "bf16"}, (2.530, 0.7, 0.8))  # worse than fp8 by 0.06 > margin, and dearer: dominated
    coarse = P(3, {"precision": "fp8c"}, (2.600, 0.4, 0.5))  # cheapest: stays however bad
    points = [fp32, fp8, bf16, coarse]
    assert [p.number for p in study_view.front(points)] == [3, 1]  # plain Pareto: fp32 dominated by fp8
    assert [p.number for p in study_view.front(points, margin=margin)] == [3, 1, 0]  # fp32 and fp8 tie
    assert 2.530 - 2.470 > margin and 2.481 - 2.470 < margin


def test_the_verdict_says_when_the_front_is_within_noise() -> None:
    adequacy = {"noise": _noise()}
    line = study_view.noise_verdict([2.470, 2.481], adequacy)
    assert line.endswith("the front's qualities span 0.0110: indistinguishable at this proxy; decided by compute")
    assert "seed sd 0.0146 (3 seeds of the dense baseline; 1 per trial)" in line and "within 0.0412 are ties" in line
    wide = study_view.noise_verdict([2.470, 2.481, 2.600], adequacy)
    assert "span 0.1300, beyond the noise; 2 of 3 points are within it of the best (itself included)" in wide
    assert "indistinguishable" not in wide
    assert "the front has one point" in study_view.noise_verdict([2.5], adequacy)
    assert "not measured" in study_view.noise_verdict([2.470, 2.481], {"mode": "skip"})


def test_the_dashboard_front_uses_the_stored_noise(tmp_path) -> None:
    from nas.dashboard.front_plot import plot_pareto_front, quality_band
    from nas.dashboard.pages import study_page

    url = f"sqlite:///{tmp_path / 'noise.db'}"
    store = Store(url)
    config = {"objectives": {"compute": ["time_ratio"]}, "task": {"objective": {"bpb": 1.0}}}
    store.create_study("p", config, {"name": "precision", "baseline": {"precision": "fp32"}}, "0" * 64,
                       adequacy={"mode": "warn", "passed": True, "summary": "ok", "checks": [], "noise": _noise()})
    for number, params, quality, time_ratio in ((0, {"precision": "fp32"}, 2.481, 1.0),
                                                (1, {"precision": "fp8"}, 2.470, 0.5)):
        store.start_trial("p", number, params, {}, cost={"time_ratio": time_ratio})
        store.finish_trial("p", number, "COMPLETE", objectives={"quality": quality, "time_ratio": time_ratio})
    store.close()
    reader = StoreReader(url)
    try:
        view = reader.study("p")
    finally:
        reader.close()
    assert [t.number for t in dashboard_front(view)] == [1, 0]  # a tie on quality: both on the front
    assert quality_band(view) == pytest.approx(2 * _noise()["sd"])
    front_trace = next(t for t in plot_pareto_front([view]).data if t.name == "Pareto front")
    assert front_trace.error_y.value == pytest.approx(2 * _noise()["sd"]) and front_trace.error_y.visible
    assert list(front_trace.y) == [2.470, 2.481]
    page = study_page(view)
    assert "indistinguishable at this proxy; decided by compute" in page
