"""Inference cost model: KV-cache bytes in closed form and against the model's own cache, decode/prefill roofline
bytes, ratios that must move one way, the serving workload, and the objectives end to end."""

from __future__ import annotations

import pytest
import torch

from nas.cost import Coster, Serving, Workload, estimate, inference, kv_cache_bytes, load_hardware, load_target
from nas.cost.inference import cached_positions, decode_kernels, layer_attention, prefill_kernels
from nas.model import ArchConfig, TransformerLM
from nas.model.kv_cache import KVCache
from nas.study.objectives import COMPUTE_KEYS

TINY = dict(seq_len=64, n_layers=2, d_model=32, n_heads=4, ffn_mult=2.0)  # head_dim 8
DENSE_FP32 = 2 * 2 * 4 * 8 * 64 * 4  # layers x (K, V) x heads x head_dim x positions x bytes


def tiny(**changes) -> ArchConfig:
    return ArchConfig.from_dict({**TINY, **changes})


def _lg(window: int, global_tokens: int, **more) -> dict:
    return dict(attention="local_global", window=window, global_tokens=global_tokens, **more)


@pytest.mark.parametrize("changes, context, expected", [
    ({}, 64, DENSE_FP32),
    ({}, 10, DENSE_FP32 * 10 // 64),
    (_lg(16, 4), 64, DENSE_FP32 * 20 // 64),  # window + sinks
    (_lg(16, 4), 12, DENSE_FP32 * 12 // 64),  # a context shorter than window + sinks holds itself
    (_lg(16, 0, gate="dynamic"), 64, DENSE_FP32 * 16 // 64),
    (dict(kv_heads=2), 64, DENSE_FP32 // 2),  # GQA: half the kv heads
    (dict(kv_heads=1, group_share="qkv"), 64, DENSE_FP32 // 4),
    (dict(kv_heads=2, **_lg(16, 4)), 64, DENSE_FP32 * 20 // 64 // 2),
    (dict(sharing="all"), 64, DENSE_FP32),  # shared weights, one cache per layer position
    (dict(precision=dict(attention="bf16")), 64, DENSE_FP32 // 2),
    (dict(precision=dict(attention="fp8_e4m3")), 64, DENSE_FP32 // 4),
])
def test_kv_cache_bytes_closed_form(changes, context, expected):
    assert kv_cache_bytes(tiny(**changes), context) == expected


@pytest.mark.parametrize("changes", [{}, _lg(16, 4), _lg(7, 0, kv_heads=2), dict(kv_heads=1, group_share="qkv"),
                                     _lg(9, 2, gate="dynamic")])
@pytest.mark.parametrize("context", [5, 40, 64])
def test_kv_cache_bytes_equal_the_models_cache_after_decoding(changes, context):
    arch = tiny(**changes)
    model, cache = TransformerLM(arch).eval(), KVCache(arch, 1, max_len=context)
    with torch.no_grad():
        for t in range(context):
            model.decode_step(torch.tensor([t % arch.vocab_size]), cache)
    assert cache.nbytes() == kv_cache_bytes(arch, context)


def test_each_layer_caches_what_its_attention_sees():
    layers = layer_attention(tiny(**_lg(16, 4)))
    assert len(layers) == 2 and {(la.kind, la.window, la.global_tokens) for la in layers} == {("local", 16, 4)}
    assert [cached_positions(la, 64) for la in layer_attention(tiny())] == [64, 64]
    mixed = layer_attention(tiny(**_lg(16, 4), global_every=2))  # a local:global layout: the global layer keeps all
    assert [cached_positions(la, 64) for la in mixed] == [20, 64]
    assert kv_cache_bytes(tiny(**_lg(16, 4), global_every=2), 64) == (20 + 64) * 2 * tiny().n_kv * tiny().hd * 4


def test_decode_reads_every_use_of_the_weights_and_every_sequences_cache():
    hw, B, C = load_hardware("cpu"), 3, 48  # cpu: fp32 storage, no rounding for fp32
    for arch in (tiny(), tiny(**_lg(16, 4), kv_heads=2), tiny(sharing="all")):
        ks = decode_kernels(arch, Serving(B, C), hw)
        attention = sum(k.bytes for k in ks if k.component in ("attn_scores", "attn_values"))
        q_and_out = 2 * 4 * B * arch.n_heads * arch.hd * arch.n_layers
        assert attention == B * kv_cache_bytes(arch, C) + q_and_out
        d, L, hidden, H, KV, hd = arch.d_model, arch.n_layers, arch.ffn_hidden, arch.n_heads, arch.n_kv, arch.hd
        n_q = H if arch.group_share == "kv" else KV
        weights = L * (d * (n_q + 2 * KV) * hd + H * hd * d + 2 * d * hidden) + arch.vocab_size * d  # per use
        activations = L * (d + (n_q + 2 * KV) * hd + H * hd + d + d + hidden + hidden + d) + d + arch.vocab_size
        assert sum(k.bytes for k in ks if k.flops and k.component not in ("attn_scores", "attn_values")) \
            == 4 * (weights + B * activations)


def test_prefill_computes_the_forward_flops_of_the_context_and_the_last_logits_only():
    arch, B, C = tiny(), 2, 40
    from nas.cost import flops

    fwd = flops(arch, Workload(B, C, 1), attention="kernel").forward
    ks = prefill_kernels(arch, Serving(B, C), load_hardware("h100_sxm"))
    assert sum(k.flops for k in ks if k.component == "unembedding") == 2 * B * arch.d_model * arch.vocab_size
    for component in ("qkv", "attn_out", "ffn", "attn_scores", "attn_values"):
        assert sum(k.flops for k in ks if k.component == component) == fwd[component]


def test_inference_ratios_move_the_way_they_must():
    coster = Coster("gpt_1b_32k", "h100_sxm")
    ratios = lambda knobs: coster.estimate(knobs).to_dict()  # noqa: E731
    wide, mid, narrow = (ratios(_lg(w, 16)) for w in (8192, 2048, 512))
    for key in ("kv_cache_ratio", "decode_time_ratio", "prefill_time_ratio"):
        assert 1 > wide[key] > mid[key] > narrow[key] > 0, key
    gqa4, mqa = ratios(dict(kv_heads=4)), ratios(dict(kv_heads=1))
    assert gqa4["kv_cache_ratio"] == 0.25 and mqa["kv_cache_ratio"] == 1 / 16
    assert 1 > gqa4["decode_time_ratio"] > mqa["decode_time_ratio"]
    assert gqa4["prefill_time_ratio"] < 1
    shared = ratios(dict(sharing="all"))  # weights read once per use: sharing saves no decode time
    assert shared["kv_cache_ratio"] == 1 and shared["decode_time_ratio"] == pytest.approx(1)
    bf16 = ratios(dict(precision=dict(attention="bf16", ffn="bf16", embed="bf16")))
    # norms, residual stay fp32
    assert bf16["kv_cache_ratio"] == 0.5 and bf16["decode_time_ratio"] == pytest.approx(0.5, rel=1e-3)


def test_decode_and_prefill_grow_with_context_and_batch():
    arch, hw = load_target("gpt_1b")[0], load_hardware("h100_sxm")
    decode = [inference(arch, Serving(b, c), hw).decode.total for b, c in ((1, 512), (1, 2048), (8, 2048))]
    prefill = [inference(arch, Serving(b, c), hw).prefill.total for b, c in ((1, 512), (1, 2048), (8, 2048))]
    assert decode == sorted(decode) and len(set(decode)) == 3
    assert prefill == sorted(prefill) and len(set(prefill)) == 3
    # at batch 1 and a short context, decode reads about the weights once (fp32: 4 bytes each)
    short = inference(arch, Serving(1, 16), hw).decode
    assert short.bytes_total == pytest.approx(4 * 24 * 12 * 2048**2, rel=0.02)


def test_serving_workload_defaults_and_errors(tmp_path):
    assert Workload(8, 2048, 10).serving == Serving(1, 2048)
    assert Workload(8, 2048, 10, inference={"batch": 16}).serving == Serving(16, 2048)
    assert Workload(8, 2048, 10, inference={"context": 512, "batch": 2}).serving == Serving(2, 512)
    with pytest.raises(ValueError, match=r"Workload.inference=\{'batches': 2\} is invalid: expected a mapping with "
                                         r"keys batch, context"):
        Workload(8, 2048, 10, inference={"batches": 2})
    with pytest.raises(ValueError, match=r"Workload.inference.context=0 is invalid: expected an integer >= 1"):
        Workload(8, 2048, 10, inference={"context": 0})
    target = {"name": "t", "arch": {**TINY}, "workload": {"batch": 2, "seq_len": 64, "train_tokens": 1000,
                                                         "inference": {"batch": 4, "context": 32}}}
    report = estimate({}, target=target, hardware="cpu").to_dict()
    assert report["inference_batch"] == 4 and report["inference_context"] == 32
    assert report["kv_cache_bytes"] == DENSE_FP32 // 2
    too_long = {**target, "workload": {**target["workload"], "inference": {"context": 65}}}
    with pytest.raises(ValueError, match=r"workload.inference.context=65 is invalid: .* seq_len=64"):
        estimate({}, target=too_long, hardware="cpu")


def test_every_inference_ratio_is_a_compute_objective_in_the_report():
    report = estimate(_lg(512, 16), target="gpt_1b_32k", hardware="h100_sxm").to_dict()
    for key in ("kv_cache_ratio", "prefill_time_ratio", "decode_time_ratio"):
        assert key in COMPUTE_KEYS and 0 < report[key] < 1
