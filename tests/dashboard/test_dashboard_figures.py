"""Figure functions on seeded trials, against Optuna's own Pareto front, hypervolume and importances."""

from __future__ import annotations

import random

import numpy as np
import optuna
import pytest
from dashboard_seed import EVIL, GAMMA, GAMMA_FRONT, KNOWN, KNOWN_FRONT
from optuna.distributions import FloatDistribution

from nas.dashboard.front_plot import front, objective_pairs, plot_pareto_front
from nas.dashboard.hypervolume import hypervolume_history, plot_hypervolume, reference_point
from nas.dashboard.importance import param_importances, plot_importances
from nas.dashboard.learning_curves import plot_learning_curves
from nas.dashboard.parallel import plot_parallel_coordinates
from nas.dashboard.reader import StudyView, TrialView
from nas.dashboard.table import trial_table
from nas.study.store import Report

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _optuna_front(points: list[tuple[float, float]]) -> set[int]:
    study = optuna.create_study(directions=["minimize", "minimize"])
    for c, q in points:
        study.add_trial(optuna.trial.create_trial(values=[q, c], params={"c": c},
                                                  distributions={"c": FloatDistribution(0, 10)}))
    return {t.number for t in study.best_trials}


def _view(points: list[tuple[float, float]]) -> StudyView:
    # one configuration per trial: the front keeps one trial per configuration (tests/test_study_view.py), and
    # Optuna's best_trials, the oracle, keeps every trial at a non-dominated point
    trials = tuple(TrialView(i, "COMPLETE", {"i": i, "c": c}, q, (c,)) for i, (c, q) in enumerate(points))
    return StudyView("synthetic", ("flops_ratio",), "quality", trials)


def test_known_front_matches_optuna_and_expectation(reader, seeded) -> None:
    view = reader.study("alpha")
    ours = {t.number for t in front(view)}
    oracle = {t.number for t in optuna.load_study(study_name="alpha", storage=seeded.url).best_trials}
    assert ours == oracle == KNOWN_FRONT


@pytest.mark.parametrize("seed", range(5))
def test_random_fronts_match_optuna(seed: int) -> None:
    rng = random.Random(seed)
    grid = [round(rng.uniform(0.1, 1.0), 1) for _ in range(40)]  # coarse values: many ties and duplicates
    points = [(c, round(rng.uniform(0.9, 1.5), 1)) for c in grid]
    assert {t.number for t in front(_view(points))} == _optuna_front(points)


def test_pareto_figure_shows_every_trial_kind(reader) -> None:
    view = reader.study("alpha")
    fig = plot_pareto_front([view])
    traces = {t.name: t for t in fig.data}
    assert sorted(traces["completed"].x) == sorted(s.compute for s in KNOWN if s.state == "COMPLETE")
    assert list(traces["completed"].y) == [s.quality for s in KNOWN if s.state == "COMPLETE"]
    pruned = traces["pruned (last rung)"]
    assert list(pruned.x) == [0.4] and list(pruned.y) == [1.40] and pruned.opacity < 1  # at its last rung, dimmed
    line = traces["Pareto front"]
    assert "lines" in line.mode and list(line.x) == sorted(line.x)
    expected = {(s.compute, s.quality) for s in KNOWN if s.number in KNOWN_FRONT}
    assert set(zip(line.x, line.y)) == expected
    assert set(traces["dense baseline"].x) == {1.0} and len(traces["dense baseline"].x) == 2  # trials 0 and 8
    hover = traces["completed"].text[0]
    assert "attention = dense" in hover and "step_flops = 6e+12" in hover  # knobs and absolute cost on hover


def test_comparison_has_one_front_per_study(reader) -> None:
    fig = plot_pareto_front([reader.study("alpha"), reader.study("beta")])
    fronts = [t for t in fig.data if t.name.endswith("Pareto front")]
    assert [t.name for t in fronts] == ["alpha: Pareto front", "beta: Pareto front"]
    assert list(fronts[1].x) == [0.6, 0.75, 1.0]  # beta: 1 (0.6, 1.03), 3 (0.75, 1.01), 0 (1.0, 0.98)


@pytest.mark.parametrize("name, seeds", [("alpha", KNOWN), ("gamma", GAMMA)])  # 2 and 3 objectives
def test_hypervolume_matches_optuna_history(reader, seeded, name, seeds) -> None:
    view = reader.study(name)
    history, ref = hypervolume_history(view), reference_point(view)
    assert len(ref) == 1 + len(view.compute_keys)
    oracle = optuna.visualization.plot_hypervolume_history(
        optuna.load_study(study_name=name, storage=seeded.url), reference_point=list(ref))
    complete = [s.number for s in seeds if s.state == "COMPLETE"]
    ours = [v for n, v in zip(history.numbers, history.values) if n in complete]
    np.testing.assert_allclose(ours, oracle.data[0].y, rtol=1e-12)
    assert history.tokens == sorted(history.tokens) and history.tokens[-1] == sum(t.tokens for t in view.trials)
    fig = plot_hypervolume(view)
    assert len(fig.data) == 2 and f"over {len(ref)} objectives" in fig.layout.title.text


def test_two_objective_hypervolume_is_the_staircase_area(reader) -> None:
    view = reader.study("alpha")
    ref = reference_point(view)  # (quality, flops_ratio)
    pts = sorted((s.compute, s.quality) for s in KNOWN if s.number in KNOWN_FRONT)
    area = sum((nxt[0] - c) * (ref[0] - q) for (c, q), nxt in zip(pts, pts[1:] + [(ref[1], 0)]))
    assert hypervolume_history(view).values[-1] == pytest.approx(area)


def test_learning_curves_cut_pruned_trials(reader) -> None:
    view = reader.study("alpha")
    fig = plot_learning_curves(view)
    by_name = {t.name: t for t in fig.data}
    pruned = by_name["trial 4 (pruned)"]
    done = by_name["trial 1 (complete)"]
    assert len(pruned.x) == 2 < len(done.x) == 3 and pruned.line.dash == "dot" and pruned.marker.symbol[-1] == "x"
    assert list(pruned.x) == [10 * 1024, 20 * 1024]


def test_parallel_coordinates_axes(reader) -> None:
    view = reader.study("alpha")
    dims = plot_parallel_coordinates(view).data[0].dimensions
    labels = [d.label for d in dims]
    assert labels == ["attention", "window", "global_tokens", "gate", "flops_ratio", "quality (bpb)"]
    window = dims[1]
    assert list(window.ticktext) == ["n/a", "8", "16", "24", "32", "64"]  # dense has no window; numeric order
    assert len(dims[-1].values) == sum(s.state == "COMPLETE" for s in KNOWN)


def test_importances_find_the_knob_each_objective_depends_on() -> None:
    """Ground truth by construction: quality depends only on the gate, flops only on the window."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    rng = random.Random(0)
    study = optuna.create_study(directions=["minimize", "minimize"])
    dists = {"window": IntDistribution(4, 64), "gate": CategoricalDistribution(["none", "dynamic"])}
    for _ in range(60):
        params = {"window": rng.randint(4, 64), "gate": rng.choice(["none", "dynamic"])}
        values = [(1.0 if params["gate"] == "none" else 2.0) + rng.uniform(0, 0.01), params["window"] / 64]
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, values=values))
    ours = param_importances(study, ["quality", "flops_ratio"])
    assert ours["quality"]["gate"] > 1.5 * ours["quality"]["window"]  # PED-ANOVA: the responsible knob leads
    assert ours["flops_ratio"]["window"] > 1.5 * ours["flops_ratio"]["gate"]
    fig = plot_importances(ours)
    assert [b.name for b in fig.data] == ["quality", "flops_ratio"] and set(fig.data[0].y) == set(ours["quality"])


def test_table_and_hover_escape_html(reader) -> None:
    view = reader.study(EVIL)
    html = trial_table(view)
    assert "<script>" not in html and "&lt;script&gt;" not in html  # the name is not in the table; params are
    alpha = trial_table(reader.study("alpha"))
    assert "&lt;b&gt;out of memory&lt;/b&gt;" in alpha and "<b>out" not in alpha
    assert alpha.count("<tr class=") == len(KNOWN)
    fig = plot_pareto_front([view])
    assert EVIL not in fig.to_json() and "&lt;script&gt;alert(1)&lt;/script&gt;" in fig.data[0].text[0]


def test_views_of_reports() -> None:
    t = TrialView(0, "PRUNED", {}, 1.2, (0.5,), reports=(Report(1, 64, {"quality": 2.0}), Report(2, 128, {})))
    assert t.tokens == 128


# ---- two compute objectives (gamma: quality, flops_ratio, memory_ratio) -------------------------------------------


def test_three_objective_front_is_the_hand_computed_one_and_optunas(reader, seeded) -> None:
    view = reader.study("gamma")
    assert view.compute_keys == ("flops_ratio", "memory_ratio")
    oracle = {t.number for t in optuna.load_study(study_name="gamma", storage=seeded.url).best_trials}
    assert {t.number for t in front(view)} == oracle == GAMMA_FRONT


def test_pairwise_front_panels(reader) -> None:
    view = reader.study("gamma")
    assert objective_pairs([view]) == [("flops_ratio", "quality"), ("memory_ratio", "quality"),
                                       ("flops_ratio", "memory_ratio")]
    fig = plot_pareto_front([view])
    panels = [a.text for a in fig.layout.annotations]
    assert panels == ["quality vs flops_ratio", "quality vs memory_ratio", "memory_ratio vs flops_ratio"]
    seeds = {s.number: s for s in GAMMA}
    fronts = [t for t in fig.data if t.name == "Pareto front"]
    assert len(fronts) == 3 and all(t.mode == "markers" for t in fronts)  # a projected front is not a curve
    expected = [{(seeds[n].compute[0], seeds[n].quality) for n in GAMMA_FRONT},
                {(seeds[n].compute[1], seeds[n].quality) for n in GAMMA_FRONT},
                {(seeds[n].compute[0], seeds[n].compute[1]) for n in GAMMA_FRONT}]
    assert [set(zip(t.x, t.y)) for t in fronts] == expected
    assert (fronts[1].xaxis, fronts[1].yaxis) == ("x2", "y2")
    assert fig.layout.xaxis3.title.text == "flops_ratio (ratio to dense)"
    assert fig.layout.yaxis3.title.text == "memory_ratio (ratio to dense)"
    assert sum(t.showlegend is not False for t in fig.data) == 4  # one legend entry per kind
    hover = [t for t in fig.data if t.name == "completed"][0].text[0]
    assert "flops_ratio = 1" in hover and "memory_ratio = 1" in hover


def test_parallel_coordinates_and_table_show_every_objective(reader) -> None:
    view = reader.study("gamma")
    labels = [d.label for d in plot_parallel_coordinates(view).data[0].dimensions]
    assert labels[-3:] == ["flops_ratio", "memory_ratio", "quality (bpb)"]
    html = trial_table(view)
    assert "<th>flops_ratio</th><th>memory_ratio</th><th>step_flops</th><th>memory_bytes</th>" in html
    assert html.count('data-v="yes"') == len(GAMMA_FRONT)
