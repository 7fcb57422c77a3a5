"""nas.bench.recipe_claims: verdicts from per-seed studies seeded through the store API (qualities chosen, costs from
the model).

Oracles: the pick of `policy=min_compute` is hand-derived from the chosen qualities; compute figures are the
cost model's at the claim's target (checked against the values in the design notes where stated)."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from nas.bench import recipe_claims
from nas.bench.claims_page import claims_page
from nas.cost.report import Coster
from nas.evaluation.proxy import load_proxy, proxy_arch
from nas.profiles import read_profile
from nas.study.space import nest
from nas.study.store import Store

BY_KEY = {c.key: c for c in recipe_claims.CLAIMS}
TINY = load_proxy("tiny")
LG = {"attention": "local_global", "global_tokens": 16, "gate": "dynamic"}
RECIPE_PRECISION = {"precision.attention": "bf16", "precision.ffn": "adaptive", "precision.adaptive_format": "fp8_e5m2"}


def seed_claim(store: Store, key: str, seed: int, trials: list[tuple[dict, float]], proxy=TINY, target="gpt_1b_32k",
               compute=("flops_ratio",), baseline=None) -> None:
    """A claim's study for one seed: COMPLETE trials (params, quality), compute objectives from the cost model."""
    target_profile = {"name": target, **read_profile("target", target)[1]}
    config = {"proxy": asdict(proxy), "task": {"name": "t"}, "target": target_profile, "budget_tokens": None,
              "objectives": {"compute": list(compute)}, "seed": seed}
    name = recipe_claims.study_name(BY_KEY[key], seed)
    store.create_study(name, config, {"name": key, "baseline": baseline or trials[0][0]}, "f" * 64)
    coster = Coster(target_profile, "h100_sxm")
    for number, (params, quality) in enumerate(trials):
        arch = proxy_arch(nest(params), proxy)
        report = coster.estimate(arch)
        store.start_trial(name, number, params, arch.to_dict())
        store.finish_trial(name, number, "COMPLETE", objectives={"quality": quality, **{
            k: getattr(report, k) for k in compute}})


@pytest.fixture()
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'claims.db'}")
    yield s
    s.close()


def _sparse(store: Store, qualities: tuple[float, float, float]) -> None:
    for seed in (0, 1, 2):
        seed_claim(store, "sparse_attention", seed, [({"attention": "dense"}, 1.0)] + [
            ({**LG, "window": w}, q) for w, q in zip((4, 8, 16), qualities)])


def test_sparse_attention_picks_the_cheapest_window_within_the_quality_bound(store):
    _sparse(store, (1.05, 1.02, 1.01))  # ratios 0.952 (out), 0.980, 0.990: window 8 is the cheapest kept
    result = recipe_claims.evaluate(store, BY_KEY["sparse_attention"], [0, 1, 2])
    assert result.picks == ("attention=local_global global_tokens=16 gate=dynamic window=8",) * 3
    target = read_profile("target", "gpt_1b_32k")[1]
    r = Coster({"name": "t", **target}).estimate(proxy_arch({**LG, "window": 8}, TINY))
    cut = 1 - r.flops.forward_total / r.baseline_flops.forward_total
    assert result.measured.startswith(f"forward compute -{100 * cut:.1f}%")
    assert 0.40 < cut < 0.58 and result.status == recipe_claims.FAIL  # attention is ~57% of dense forward FLOPs at 32k
    assert "from a 131,072-token context" in result.reason  # window 8/64 = 1/8 of the context reaches -58% there


def test_a_claim_whose_pick_meets_the_figure_passes(store, monkeypatch):
    _sparse(store, (1.05, 1.02, 1.01))
    monkeypatch.setitem(recipe_claims.CLAIMED, "sparse_attention", 0.40)
    assert recipe_claims.evaluate(store, BY_KEY["sparse_attention"], [0, 1, 2]).status == recipe_claims.PASS


def test_sparse_attention_with_every_window_too_lossy_picks_dense(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        _sparse(s, (1.2, 1.1, 1.05))
        result = recipe_claims.evaluate(s, BY_KEY["sparse_attention"], [0, 1, 2])
    finally:
        s.close()
    assert result.picks == ("attention=dense",) * 3 and result.measured.startswith("forward compute -0.0%")
    assert result.status == recipe_claims.FAIL and "no sparse configuration keeps 97%" in result.reason


def test_sharing_pick_respects_the_quality_loss_bound(store):
    deep8 = replace(load_proxy("tiny_deep"), n_heads=8)
    recipe = {"sharing": "ffn_block_diag", "kv_heads": 1, "group_share": "qkv"}
    for seed in (0, 1, 2):  # the full recipe loses 5% (> 3.2%): the QKV grouping alone (1% loss) is picked
        seed_claim(store, "sharing", seed, [({"sharing": "none", "kv_heads": None}, 1.0),
                                            ({"sharing": "none", "kv_heads": 1, "group_share": "qkv"}, 1.01),
                                            ({"sharing": "ffn_block_diag", "kv_heads": None}, 1.002),
                                            (recipe, 1.05)],
                   proxy=deep8, target="gpt_1b", compute=("unique_params_ratio",))
    result = recipe_claims.evaluate(store, BY_KEY["sharing"], [0, 1, 2])
    assert result.picks == ("sharing=none kv_heads=1 group_share=qkv",) * 3
    grouped = Coster("gpt_1b").estimate(proxy_arch({"kv_heads": 1, "group_share": "qkv"}, deep8))
    assert grouped.arch.kv_heads == 2  # 1 of 8 heads carries to 2 of the target's 16: groups of 8
    assert result.measured.startswith(f"parameters -{100 * (1 - grouped.unique_params_ratio):.1f}%")
    assert result.status == recipe_claims.FAIL and "quality loss 0.048" in result.reason


def test_precision_verdicts_follow_quality_then_the_model(store, monkeypatch):
    for seed in (0, 1, 2):
        seed_claim(store, "precision", seed, [({"precision.attention": "fp32"}, 1.0), (RECIPE_PRECISION, 1.001)],
                   target="gpt_1b", compute=("time_ratio", "memory_ratio"),
                   baseline={"precision.attention": "fp32"})
    claim = BY_KEY["precision"]
    result = recipe_claims.evaluate(store, claim, [0, 1, 2])
    assert result.status == recipe_claims.FAIL and "by the cost model" in result.reason  # ~1.3x vs bf16, not 2.3x
    monkeypatch.setitem(recipe_claims.CLAIMED, "precision_speed", 1.2)
    monkeypatch.setitem(recipe_claims.CLAIMED, "precision_memory", 0.05)
    modelled = recipe_claims.evaluate(store, claim, [0, 1, 2])
    assert modelled.status == recipe_claims.UNMEASURABLE  # modelled: never a PASS
    lossy = replace(claim, min_quality_ratio=0.9995)
    result = recipe_claims.evaluate(store, lossy, [0, 1, 2])
    assert result.status == recipe_claims.FAIL and "quality ratio below" in result.reason


def test_combined_without_a_configuration_at_dense_quality_fails(store):
    tiny8 = replace(TINY, n_heads=8)
    for seed in (0, 1, 2):
        seed_claim(store, "combined", seed, [({"attention": "dense"}, 1.0), ({"attention": "local_global", "window": 8,
                                              "global_tokens": 16, "gate": "dynamic"}, 1.02)],
                   proxy=tiny8, compute=("time_ratio", "flops_ratio"))
    result = recipe_claims.evaluate(store, BY_KEY["combined"], [0, 1, 2])
    assert result.picks == ("attention=dense",) * 3 and result.status == recipe_claims.FAIL
    assert recipe_claims.summary_line([result]) == "claims passed=0 failed=1 unmeasurable=0"
    page = claims_page([result], recipe_claims.summary_line([result]))
    assert "claim-combined" in page and "FAIL" in page and "plotly.min.js" in page
    assert recipe_claims.markdown([result]).count("\n") == 2  # header, rule, one row


def test_a_missing_study_is_named(store):
    with pytest.raises(ValueError, match="claim-sharing-s0"):
        recipe_claims.evaluate(store, BY_KEY["sharing"], [0])
