"""A sparse_attn-like study over quality, FLOPs, KV cache and decode time: pairwise front panels and the table's
absolute columns, with costs from the real cost model."""

from __future__ import annotations

from nas.cost import Coster
from nas.dashboard.front_plot import front, objective_pairs, plot_pareto_front
from nas.dashboard.reader import StudyView, TrialView
from nas.dashboard.table import trial_table

KEYS = ("flops_ratio", "kv_cache_ratio", "decode_time_ratio")
KNOBS = [  # (knobs in gpt_1b_32k units, a made-up quality: narrower windows lose more)
    ({}, 2.70),
    (dict(attention="local_global", window=8192, global_tokens=4), 2.72),
    (dict(attention="local_global", window=2048, global_tokens=4), 2.80),
    (dict(attention="local_global", window=2048, global_tokens=0), 2.85),
    (dict(attention="local_global", window=512, global_tokens=4, gate="dynamic"), 3.10),
]


def _view() -> StudyView:
    coster = Coster("gpt_1b_32k", "h100_sxm")
    trials = []
    for number, (knobs, quality) in enumerate(KNOBS):
        cost = coster.estimate(knobs).to_dict()
        trials.append(TrialView(number, "COMPLETE", knobs or {"attention": "dense"}, quality,
                                tuple(cost[k] for k in KEYS), cost, is_baseline=not knobs))
    return StudyView("inference", KEYS, "quality (bpb)", tuple(trials))


def test_pairwise_fronts_over_quality_flops_kv_cache_and_decode_time():
    view = _view()
    pairs = objective_pairs([view])
    assert pairs == [("flops_ratio", "quality"), ("kv_cache_ratio", "quality"), ("decode_time_ratio", "quality"),
                     ("flops_ratio", "kv_cache_ratio"), ("flops_ratio", "decode_time_ratio"),
                     ("kv_cache_ratio", "decode_time_ratio")]
    fig = plot_pareto_front([view])
    assert [a.text for a in fig.layout.annotations] == [f"{y} vs {x}" for x, y in pairs]
    assert len([t for t in fig.data if t.name == "Pareto front"]) == len(pairs)
    vectors = {t.number: t.vector for t in view.trials}  # by brute force: no other point is <= everywhere
    undominated = {n for n in vectors if not any(
        vectors[m] != vectors[n] and all(a <= b for a, b in zip(vectors[m], vectors[n])) for m in vectors)}
    assert {t.number for t in front(view)} == undominated == {0, 1, 2, 3, 4}  # each trades quality for cost


def test_table_shows_the_absolute_inference_costs():
    html = trial_table(_view())
    assert ("<th>flops_ratio</th><th>kv_cache_ratio</th><th>decode_time_ratio</th><th>step_flops</th>"
            "<th>kv_cache_bytes</th><th>decode_time_s</th>") in html
