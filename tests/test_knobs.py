"""nas.knobs: the one proxy <-> target scaling rule, checked against hand-computed carries."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nas.cost import apply_knobs, load_target
from nas.evaluation.proxy import load_proxy, proxy_arch
from nas.knobs import carry, nearest_divisor, sizes_of
from nas.model.config import ArchConfig


def test_nearest_divisor_breaks_ties_upwards() -> None:
    assert nearest_divisor(12, 5) == 6  # divisors 4 and 6 are both 1 away: the larger
    assert nearest_divisor(16, 3) == 4  # 2 and 4 are 1 away
    assert nearest_divisor(24, 10.4) == 12 and nearest_divisor(7, 3) == 1


def test_a_proxy_trial_carries_to_the_target_and_back_by_one_rule() -> None:
    tiny = load_proxy("tiny")
    proxy = proxy_arch({"attention": "local_global", "window": 8, "global_tokens": 2, "kv_heads": 2,
                        "sharing": "cycle", "unique_layers": 1}, tiny)
    target = apply_knobs(load_target("gpt_1b_32k")[0], proxy)
    # window: 8 of 64 positions -> 4096 of 32768; global tokens: a count; kv: half the heads; M: half the layers
    assert (target.window, target.global_tokens, target.kv_heads, target.unique_layers) == (4096, 2, 8, 12)
    back = proxy_arch(target, tiny)
    assert (back.window, back.global_tokens, back.kv_heads, back.unique_layers) == (8, 2, 2, 1)
    assert sizes_of(back) == sizes_of(proxy)


def test_a_knob_dict_is_taken_in_the_units_of_the_sizes_and_refused_when_it_does_not_fit() -> None:
    sizes = sizes_of(ArchConfig(seq_len=64, n_layers=2, d_model=64, n_heads=4))
    assert carry({"attention": "local_global", "window": 40}, sizes).window == 40
    assert carry({"attention": "local_global", "window": 64}, sizes).window == 64  # the whole context: one bound
    with pytest.raises(ValueError, match=r"do not fit the proxy \(ArchConfig.window=321 is invalid: must be <= "
                                         r"seq_len=64\)"):
        carry({"attention": "local_global", "window": 321}, sizes)
    with pytest.raises(ValueError, match="ArchConfig.global_tokens=64 is invalid: must be below seq_len=64"):
        carry({"attention": "local_global", "window": 8, "global_tokens": 64}, sizes)
    with pytest.raises(ValueError, match="ArchConfig.window=None is invalid: required with attention=local_global"):
        carry({"attention": "local_global"}, sizes)
    assert carry({"window": 321}, sizes).window is None  # a dense model has no window: not carried, not stored
    with pytest.raises(ValueError, match="kv_heads"):
        carry({"kv_heads": 3}, sizes)  # not rounded in the sizes' own units: refused


def test_sharing_patterns_that_fix_m_drop_a_stale_unique_layers_when_carried() -> None:
    source = ArchConfig(n_layers=4, sharing="cycle", unique_layers=2).replace(sharing="all")
    carried = carry(source, sizes_of(ArchConfig(n_layers=24)))
    assert carried.unique_layers is None and carried.n_unique == 1
    rev = carry(ArchConfig(n_layers=6, sharing="cycle_rev", unique_layers=3), sizes_of(ArchConfig(n_layers=8)))
    assert rev.unique_layers == 4  # 3 of 6 -> 4 of 8, a divisor of 8 as cycle_rev needs


def test_ffn_blocks_carry_to_a_common_divisor_of_width_and_ffn_width() -> None:
    # Gemma 3 1B: d_model 1152, intermediate_size 6912; 5 blocks -> 4 or 6 (divisors of gcd 1152), ties go up
    gemma = load_target("gemma3_1b_32k")[0]
    proxy = proxy_arch({"sharing": "ffn_block_diag", "ffn_blocks": 5}, replace(load_proxy("tiny"), d_model=80))
    target = apply_knobs(gemma, proxy)
    assert (target.ffn_blocks, target.ffn, target.ffn_hidden) == (6, "geglu", 6912)
    assert proxy.ffn == "gelu" and proxy.intermediate_size is None  # the proxy keeps its own FFN family


def _global(arch: ArchConfig) -> list[int]:
    return [i for i in range(arch.n_layers) if arch.layer_attention(i).kind == "global"]


def test_a_layer_pattern_keeps_its_share_and_a_placement_its_relative_depth() -> None:
    """global_every keeps one global layer in k (clipped to the depth); global_layers stretches by relative depth."""
    proxy = ArchConfig(seq_len=64, n_layers=2, d_model=64, n_heads=4, attention="local_global", window=8,
                       global_every=2)
    target = apply_knobs(load_target("llama3.2_1b_32k")[0], proxy)  # 16 layers
    assert target.global_every == 2 and _global(target) == list(range(1, 16, 2))  # 1 of 2 -> 8 of 16
    gemma = ArchConfig(n_layers=26, attention="local_global", window=8, global_every=6)
    assert _global(gemma) == [5, 11, 17, 23]
    at4 = carry(gemma, {**sizes_of(gemma), "n_layers": 4})
    assert at4.global_every == 4 and _global(at4) == [3]  # 1 in 6 cannot fit 4 layers: the one global layer kept

    deep = ArchConfig(seq_len=64, n_layers=4, d_model=64, n_heads=4, attention="local_global", window=8,
                      global_layers=[3])
    up = carry(deep, {**sizes_of(deep), "n_layers": 16})
    assert up.global_layers == [12, 13, 14, 15]  # the last quarter: count x4, position kept
    assert carry(up, sizes_of(deep)).global_layers == [3]  # and back
    assert carry(deep.replace(global_layers=[1, 3]), {**sizes_of(deep), "n_layers": 8}).global_layers == [2, 3, 6, 7]
    assert carry(deep.replace(global_layers=[0]), {**sizes_of(deep), "n_layers": 6}).global_layers == [0]
    # shallower: sampled by depth; never all global, never none
    assert carry(deep.replace(global_layers=[1, 3]), {**sizes_of(deep), "n_layers": 2}).global_layers == [1]
    assert carry(up.replace(global_layers=[5]), sizes_of(deep)).global_layers == [1]  # 5.5/16 of the depth


def test_a_window_in_target_tokens_maps_to_the_proxy_by_share_or_by_count() -> None:
    """Both rules nas/knobs.py offers: the same share of the context (the default), or the same tokens, clipped."""
    gemma = ArchConfig(seq_len=32768, n_layers=26, d_model=64, n_heads=4, attention="local_global", window=512,
                       global_every=6)
    for positions, share, tokens in ((64, 1, 64), (1024, 16, 512), (256, 4, 256)):
        sizes = {**sizes_of(gemma), "seq_len": positions}
        assert carry(gemma, sizes).window == share  # 512 / 32768 of the context
        assert carry(gemma, sizes, rules={"window": "context_tokens"}).window == tokens
    with pytest.raises(ValueError, match=r"rules.window='tokens' is invalid: expected a knob .* and a rule "
                                         r"\(as_is, count, context_share, context_tokens"):
        carry(gemma, sizes_of(gemma), rules={"window": "tokens"})
