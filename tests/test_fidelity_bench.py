"""The fidelity benchmark's statistics on tiny panels whose answers are worked out by hand, and its results file."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "fidelity.py"
RESULTS = ROOT / "benchmarks" / "results" / "fidelity_cpu.txt"


def _fidelity():
    spec = importlib.util.spec_from_file_location("fidelity_bench", SCRIPT)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


F = _fidelity()


def test_resolved_pairs_ignore_differences_within_the_margin():
    def agree(predicted, reference, noise):
        pairs = F.resolved_pairs(reference, noise)
        return F.ordered_right(predicted, reference, pairs), len(pairs)

    reference = [1.00, 1.01, 1.50, 2.00]  # 0 and 1 are a tie within a margin of 0.1
    assert agree([1, 2, 3, 4], reference, 0.1) == (5, 5)
    assert agree([2, 1, 3, 4], reference, 0.1) == (5, 5)  # the tie's order does not count
    assert agree([1, 2, 4, 3], reference, 0.1) == (4, 5)  # 2 and 3 swapped: resolved, so it counts
    assert agree([1, 1, 1, 1], reference, 0.1) == (0, 5)  # a proxy tie orders nothing
    assert agree([1, 2, 3, 4], reference, 1.5) == (0, 0)


def test_seeds_to_resolve_is_the_first_seed_count_whose_margin_resolves_the_gap():
    sd = 0.037
    for gap in (0.004, 0.013, 0.029, 0.05, 0.2):
        margin = [2 * sd * math.sqrt(2 / n) for n in range(1, 2000)]  # resolved_pairs' margin at n seeds a mean
        first = next(n for n, m in enumerate(margin, start=1) if F.resolved_pairs([0.0, gap], m))
        assert F.seeds_to_resolve(gap, sd) == first
    assert F.seeds_to_resolve(0.0, sd) == math.inf


def test_unresolved_pairs_line_names_the_seeds_for_half_and_three_quarters():
    # gaps 0.01, 0.02, 0.03 within a margin of 0.05 (sd 0.05 / (2 sqrt 2) ~ 0.0177); 0.05 and above resolved
    sd = 0.05 / (2 * math.sqrt(2))
    line = F.unresolved_seeds_line([0.0, 0.01, 0.03, 0.2], 0.05, sd, 1)
    need = sorted(F.seeds_to_resolve(g, sd) for g in (0.01, 0.02, 0.03))  # 0.03 - 0.01, and 0.01, 0.03 from 0
    assert line.startswith("pairs the reference leaves unresolved: 3;")
    assert f"half of them: {need[1]}, three quarters: {need[2]} (now 1;" in line
    assert "never (equal)" in F.unresolved_seeds_line([1.0, 1.0], 0.05, sd, 1)
    assert F.unresolved_seeds_line([0.0, 1.0], 0.05, sd, 1).endswith("none")


def test_where_the_proxy_contradicts_the_free_ranking_the_reference_judges_it():
    # the proxy puts 1 ahead of 2 and 3 ahead of 2 against compute (the reference: 2 ahead of both, resolved),
    # and 1 ahead of 3 at equal compute (the reference agrees, resolved)
    line = F.beyond_compute_line([1.0, 2.0, 3.0, 2.5], [1.0, 2.0, 1.5, 2.6], [1.0, 0.25, 0.5, 0.26], "flops_ratio",
                                 0.1, 0.2)
    assert line == ("where the proxy contradicts the free ranking beyond its own seed noise (tie margin 0.1000): 2 "
                    "pairs against flops_ratio, the reference orders 0 of them the proxy's way (0 of the 2 it "
                    "resolves); 1 equal-compute pairs, the reference orders 1 of them the proxy's way (1 of the 1 it "
                    "resolves)")


def test_iso_compute_pairs_are_within_five_percent_of_the_larger():
    compute = [1.0, 0.50, 0.52, 0.60, 0.63, 0.70, 0.70]
    # 0.52 - 0.50 = 0.02 <= 0.026; 0.63 - 0.60 = 0.03 <= 0.0315; 0.70 = 0.70; 0.70 - 0.63 = 0.07 > 0.035
    assert F.iso_compute_pairs(compute) == [(1, 2), (3, 4), (5, 6)]
    assert F.iso_compute_pairs(compute, tolerance=0.0) == [(5, 6)]


# A panel worked by hand: dense, then three configurations of (nearly) equal compute, then a cheap one.
PRIMARY = [1.0, 0.60, 0.60, 0.62, 0.45]
REFERENCE = [2.00, 2.30, 2.40, 2.35, 2.90]
PROXY = [2.10, 2.50, 2.60, 2.70, 3.00]
NOISE = 0.06  # pairs (1, 3) and (2, 3) differ by 0.05: not resolved; the other 8 are


def test_a_proxy_scored_against_the_reference():
    s = F.score(PROXY, REFERENCE, PRIMARY, NOISE)
    # the proxy's order 0 1 2 3 4, the reference's 0 1 3 2 4: one discordant pair of 10
    assert s.tau == pytest.approx(8 / 10)
    assert s.resolved == (8, 8)  # its one miss, (2, 3), is a pair the reference does not resolve
    assert s.iso == (2, 3)  # iso pairs (1, 2), (1, 3), (2, 3): it misses (2, 3)
    assert s.iso_resolved == (1, 1)  # only (1, 2) of them is resolved
    # 0.5: only configuration 4 fits; 0.7 and 0.9: 1-4 fit, the reference's best is 1 (2.30), the proxy's pick too
    assert s.regrets == (0.0, 0.0, 0.0)


def test_the_zero_cost_rule_scored_against_the_reference():
    s = F.score([-c for c in PRIMARY], REFERENCE, PRIMARY, NOISE)
    # concordant 8, discordant 1 ((1, 3): the rule prefers 3, 0.02 more compute), one tie in the rule ((1, 2)):
    # tau-b = (8 - 1) / sqrt((10 - 1) * (10 - 0))
    assert s.tau == pytest.approx(7 / math.sqrt(90))
    assert s.resolved == (7, 8)  # the tie (1, 2) is resolved by the reference and counts as not right
    assert s.iso == (1, 3) and s.iso_resolved == (0, 1)  # right only on (2, 3)
    assert s.regrets[0] == 0.0 and s.regrets[1:] == pytest.approx((0.05, 0.05))  # it picks 3: 2.35 - 2.30


def test_regret_with_a_tie_for_the_pick_and_an_empty_budget():
    compute, reference = [1.0, 0.5, 0.5], [2.0, 2.2, 2.6]
    assert F.budget_regret([-c for c in compute], reference, compute, 0.5) == pytest.approx((2.2 + 2.6) / 2 - 2.2)
    assert F.budget_regret([3.0, 2.0, 1.0], reference, compute, 0.5) == pytest.approx(0.4)
    assert F.budget_regret([3.0, 2.0, 1.0], reference, compute, 0.4) is None
    assert F.budget_regret([1.0, 2.0, 3.0], reference, compute, 1.0) == 0.0  # dense fits and is picked


def test_calibration_compares_quality_ratios_to_dense():
    # ratios to dense: proxy 1.1, 1.2, 1.1; reference 1.1, 1.1, 1.3 -> deviations (-1, 2, -1)/30 and (-1, -1, 2)/15
    pearson, diff = F.calibration([2.0, 2.2, 2.4, 2.2], [1.0, 1.1, 1.1, 1.3])
    assert pearson == pytest.approx(-0.5) and diff == pytest.approx((0 + 0.1 + 0.2) / 3)
    assert F.calibration([2.0, 2.0, 2.0], [1.0, 1.1, 1.2])[0] is None  # a constant side has no correlation


def test_tau_b_against_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    from nas.study.ranking import kendall_tau_b

    for predicted in (PROXY, [-c for c in PRIMARY]):
        assert kendall_tau_b(predicted, REFERENCE) == pytest.approx(stats.kendalltau(predicted, REFERENCE).statistic)


@pytest.mark.parametrize("changes", [{}, {"sharing": "cycle", "unique_layers": 1, "tie_embeddings": False},
                                     {"positions": "learned", "kv_heads": 2, "attention": "local_global",
                                      "window": 8, "gate": "dynamic"}])
def test_non_embedding_params_equal_the_models_tensors_without_the_tables(changes):
    from nas.cost import param_counts
    from nas.model.config import ArchConfig
    from nas.model.transformer import TransformerLM

    arch = ArchConfig(vocab_size=96, seq_len=32, n_layers=3, d_model=32, n_heads=4, **changes)
    model = TransformerLM(arch)
    tables = ("tok_emb.", "pos_emb.", "lm_head")
    assert F.non_embedding_params(param_counts(arch)) == sum(
        p.numel() for name, p in model.named_parameters() if not name.startswith(tables))


def test_zero_cost_axes_are_the_spaces_objectives_then_parameters():
    from nas.evaluation.proxy import load_proxy

    where, axes = F.zero_cost_axes("sharing", load_proxy("tiny_deep"))
    assert where == "llama3.2_1b_32k on h100_sxm"  # the space's own target
    assert [name for name, _ in axes] == ["unique_params_ratio", "memory_ratio", "non-embedding params"]
    unique = dict(zip(map(json.dumps, F.PANELS["sharing"]), axes[0][1]))
    # one layer of 16 kept; the 128k-token embedding (about a fifth of Llama 3.2 1B) stays
    assert unique["{}"] == 1.0 and 0.2 < unique['{"sharing": "all", "sharing_scope": "both"}'] < 0.3


def test_summary_line_takes_the_worst_space():
    figures = {"sparse_attn": F.Figures(0.722, -0.111, 0.0, 0.038), "sharing": F.Figures(0.667, -0.038, None, 0.081),
               "precision": None}
    assert F.summary(figures) == ("fidelity tau_min=0.667 margin_min=-0.111 iso_acc_min=0.000 regret_max=0.081 "
                                  "tau_sparse_attn=0.722 tau_sharing=0.667 tau_precision=nan")


def test_the_results_file_regenerates_byte_identically(tmp_path):
    copy = tmp_path / RESULTS.name
    shutil.copyfile(RESULTS, copy)
    F.regenerate(copy, F.make_parser())
    assert copy.read_bytes() == RESULTS.read_bytes()
    assert copy.read_text().splitlines()[-1].startswith("fidelity tau_min=")


def test_regenerate_refuses_a_command_that_would_train(tmp_path, capsys):
    path = tmp_path / "results.txt"
    path.write_text("#   python benchmarks/fidelity.py --space precision\n")
    with pytest.raises(SystemExit) as exit_info:
        F.regenerate(path, F.make_parser())
    assert exit_info.value.code == 2 and "expected a --report-only command" in capsys.readouterr().err
    assert path.read_text() == "#   python benchmarks/fidelity.py --space precision\n"  # nothing half-written


def test_a_panel_window_reaches_the_reference_by_its_share_or_by_its_count():
    from nas.evaluation.proxy import load_proxy
    from nas.evaluation.reference import reference_proxy

    units, reference = F.panel_units("sparse_attn"), reference_proxy(load_proxy("tiny"))
    gated = {"attention": "local_global", "window": 4, "global_tokens": 4, "gate": "dynamic"}
    assert (units.seq_len, reference.seq_len) == (64, 256)
    assert F.in_units(gated, units, reference) == {**gated, "window": 16}  # 4 of 64 is 16 of 256; sinks a count
    assert F.in_units(gated, units, reference, "context_tokens") == gated  # 4 tokens at any context
    assert F.in_units(gated, units, units) == gated  # the panel's own units: unchanged
    precision = F.PANELS["precision"][1]
    assert F.in_units(precision, F.panel_units("precision"), reference) == precision  # as-is knobs keep their form


def test_proxy_kinds_table_scores_each_kind_against_one_reference():
    from nas.evaluation.proxy import load_proxy

    choice = F.Choice(load_proxy("tiny"), reference_seeds=("head_grouping=3",))
    out: list[str] = []
    F.compare_kinds("head_grouping", ["tiny", "tiny:3", "tiny_deep8:2"], choice, F.load_runs(F.RUNS), out)
    rows = {line.split(" |")[0]: line for line in out if line.startswith("| ")}
    assert "windows" not in out[0] and "reference of tiny" in out[0]  # head_grouping's panel has no window
    one, three = rows["| proxy tiny"].split(" | "), rows["| proxy tiny (mean of 3 seeds)"].split(" | ")
    assert float(three[1]) > 2 * float(one[1])  # three seeds cost about three trials
    assert one[2] == "0.200" and three[2] == "0.600"  # as the space's own report scores them
    assert "| zero-cost: flops_ratio" in rows
    missing = next(k for k in rows if k.startswith("| proxy tiny_deep8:2: "))  # not recorded: said, not scored
    assert missing.endswith("runs recorded") and rows[missing].count("|") == 8


def test_partial_reports_the_recorded_configurations_and_says_how_many_are_missing():
    from nas.evaluation.proxy import load_proxy

    args = F.make_parser().parse_args(["--report-only", "--space", "sparse_attn", "--reference-of", "sparse_attn=tiny",
                                       "--reference-window-rule", "context_tokens"])
    assert F.run(args, F.make_parser())[0].startswith("## sparse_attn: not measured yet")  # the gated window 16
    choice = F.Choice(load_proxy("tiny"), reference_of=("sparse_attn=tiny",), window_rule="context_tokens",
                      partial=True)
    out: list[str] = []
    figures = F.report("sparse_attn", choice, F.load_runs(F.RUNS), out)
    assert out[0].startswith("## sparse_attn (task long_range; 9 of 10 configurations (the rest not recorded yet)")
    assert sum(line.startswith("| {") for line in out) == 8 and figures.tau is not None  # 8 windows + dense
