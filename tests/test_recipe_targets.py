"""nas.bench.recipe_targets: the literal recipe at the real targets, costed, judged, and its quality side.

Oracles: the hand-written seed recipe (conf/model/seed_recipe_llama3.2_1b_32k.yaml); forward FLOPs by closed form
(matmuls of Llama 3.2 1B's shapes, causal pairs of a window and of the global tokens summed by hand); the stored
studies' own verdict text (nas.bench.recipe_claims) for the quality side."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nas.bench import recipe_claims, recipe_targets
from nas.cost.report import Coster
from nas.model.config import ArchConfig
from nas.study.store import Store

REPO = Path(__file__).resolve().parents[1]
FORWARD = "forward FLOPs (exact causal pairs)"


@pytest.fixture(scope="module")
def llama_1b_32k() -> list[recipe_targets.Figure]:
    return recipe_targets.target_figures("llama3.2_1b_32k")


def figure(figures, quantity: str, claim: str = "sparse_attention") -> recipe_targets.Figure:
    return next(f for f in figures if f.claim == claim and f.quantity == quantity)


def test_the_literal_sparse_recipe_over_the_published_llama_is_the_seed_recipe_file():
    costs = recipe_targets.TargetCosts("llama3.2_1b_32k")
    recipe, baseline = costs.pairs("sparse_attention", {})["published"]
    arch = costs.costers["h100_sxm"].target_arch(recipe)
    assert arch == ArchConfig.from_yaml(REPO / "conf" / "model" / "seed_recipe_llama3.2_1b_32k.yaml")
    assert (arch.window, arch.global_tokens, arch.gate, arch.kv_heads) == (512, 16, "dynamic", 8)
    assert baseline == {"kv_heads": 8}
    dense_recipe, dense_base = costs.pairs("sparse_attention", {})["dense"]
    assert dense_base == {} and costs.costers["h100_sxm"].target_arch(dense_recipe).kv_heads is None  # MHA


def _causal(seq: int, window: int) -> int:
    """Keys seen per head over a sequence: each query i sees min(i + 1, window) keys (by a plain sum)."""
    return sum(min(i + 1, window) for i in range(seq))


def test_forward_flops_ratio_equals_a_closed_form_at_llama_1b_32k(llama_1b_32k):
    S, L, d, H, hd, ff, V = 32768, 16, 2048, 32, 64, 8192, 128256
    matmul = 2 * S * L * (d * 3 * H * hd + H * hd * d + 3 * d * ff) + 2 * S * d * V
    core = lambda pairs: 2 * 2 * pairs * hd * H * L  # noqa: E731  scores and values, every layer
    dense = matmul + core(S * (S + 1) // 2)
    gate = 2 * S * d * 2 * H * L  # the per-head gate's projection in every (gated, local) layer
    sparse = matmul + gate + core(_causal(S, 512) + _causal(S, 16))  # the local branch and the global one
    assert figure(llama_1b_32k, FORWARD).dense == pytest.approx(sparse / dense, rel=1e-12)
    assert figure(llama_1b_32k, FORWARD).verdict == recipe_targets.NOT_MET  # ~0.57x, the claim is 0.42x


def test_verdicts_flip_with_the_claimed_bound(llama_1b_32k):
    ratio = figure(llama_1b_32k, FORWARD).dense
    looser = recipe_targets.target_figures("llama3.2_1b_32k", {**recipe_claims.CLAIMED,
                                                               "sparse_attention": 1 - ratio - 0.01})
    assert figure(looser, FORWARD).verdict == recipe_targets.MET
    speed = figure(llama_1b_32k, "training speed-up vs bf16, h100_sxm (model)", "precision")
    assert not speed.at_most and speed.verdict == recipe_targets.NOT_MET
    slower = recipe_targets.target_figures("llama3.2_1b_32k", {**recipe_claims.CLAIMED,
                                                               "precision_speed": speed.dense - 0.01})
    assert figure(slower, speed.quantity, "precision").verdict == recipe_targets.MET
    line = recipe_targets.summary_line(looser)
    assert line.startswith("claims_targets met=") and line.endswith("targets=1")
    assert f"met={sum(f.verdict == recipe_targets.MET for f in looser)} " in line  # the table's MET rows
    assert recipe_targets.markdown(looser).count("**MET**") == sum(f.verdict == recipe_targets.MET for f in looser)


def test_sharing_groups_8_heads_and_replaces_the_published_gqa():
    assert recipe_targets.sharing_knobs(32)["kv_heads"] == 4 and recipe_targets.sharing_knobs(16)["kv_heads"] == 2
    assert recipe_targets.sharing_knobs(4)["kv_heads"] == 1  # Gemma 3 1B: fewer than 8 heads, one group of all
    gemma = recipe_targets.TargetCosts("gemma3_1b_32k")
    recipe, baseline = gemma.pairs("sparse_attention", {})["published"]
    assert "global_every" not in recipe and baseline["global_every"] == 6  # the recipe's layout is all-local
    recipe, _ = gemma.pairs("sharing", {})["published"]
    assert recipe["global_every"] == 6 and recipe["group_share"] == "qkv"  # the sharing recipe keeps the layout
    report = Coster("gemma3_1b_32k").estimate(recipe)
    assert report.arch.n_kv == 1 and report.arch.ffn_blocks == 4 and report.unique_params_ratio < 1


def test_quality_side_names_the_nearest_measured_configuration(tmp_path):
    db = tmp_path / "claims.db"
    shutil.copy(REPO / "benchmarks" / "results" / "claims_cpu.db", db)  # the stored studies, read from a copy
    store = Store(f"sqlite:///{db}")
    try:
        lines = recipe_targets.quality_side(store, [0, 1, 2], [32768, 131072])
        precision = recipe_claims.evaluate(store, recipe_claims.CLAIMS[2], [0, 1, 2])
    finally:
        store.close()
    sparse, sharing, mixed, combined = lines
    assert "not measured at the literal recipe" in sparse and "window 1 at 32k, 0.25 at 128k" in sparse
    assert "smallest measured, 4" in sparse and "not measured at the literal recipe" in combined
    assert "the literal recipe measured" in sharing
    assert precision.measured.split("quality ratio ")[1].split(" (measured)")[0] in mixed  # the same measured figure


def test_an_unknown_claim_and_a_missing_study_file_are_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="claim='speed' is unknown: valid are sparse_attention"):
        recipe_targets.recipe_knobs("speed", 32)
    import importlib.util

    spec = importlib.util.spec_from_file_location("claims_bench", REPO / "benchmarks" / "claims.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--targets", "--db", str(tmp_path / "none.db")])
    assert exit_info.value.code == 2 and "none.db is not a file" in capsys.readouterr().err
