"""Cost model: FLOPs against FlopCounterMode and nanoGPT, parameters against the model, ratios, roofline, errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nas.cost import (
    Workload,
    apply_knobs,
    estimate,
    flops,
    load_hardware,
    load_target,
    memory,
    param_counts,
    published_arch,
    step_time,
)
from nas.model import ArchConfig, TransformerLM
from nas.model.attention import local_global_mask_mod
from nas.profiles import profile_names

TINY = dict(seq_len=32, n_layers=2, d_model=32, n_heads=4, ffn_mult=2.0)


def tiny(**changes) -> ArchConfig:
    return ArchConfig.from_dict({**TINY, **changes})


def counted_flops(model: TransformerLM, idx: torch.Tensor, train: bool = False) -> int:
    """FlopCounterMode's count of a forward (and backward) pass; SDPA on its MATH path so that it is counted."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        logits = model(idx)
        if train:
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), idx.flatten()).backward()
    return counter.get_total_flops()


# ---- FLOPs -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields, batch, seq", [
    (dict(seq_len=32, n_layers=2, d_model=32, n_heads=4), 2, 32),
    (dict(seq_len=64, n_layers=3, d_model=48, n_heads=6, kv_heads=2), 2, 64),
    (dict(seq_len=48, n_layers=2, d_model=64, n_heads=4, kv_heads=1, group_share="qkv"), 1, 40),
    (dict(seq_len=32, n_layers=1, d_model=96, n_heads=3, tie_embeddings=False, ffn_mult=3.0, vocab_size=500), 3, 32),
    (dict(seq_len=32, n_layers=2, d_model=32, n_heads=4, ffn="swiglu", intermediate_size=88, kv_heads=2), 2, 32),
    (dict(seq_len=48, n_layers=2, d_model=48, n_heads=4, head_dim=16, ffn="geglu", intermediate_size=72,
          qk_norm=True, post_norms=True, kv_heads=1, tie_embeddings=False, vocab_size=300), 2, 40),
])
def test_dense_forward_flops_match_flop_counter_with_full_attention(fields, batch, seq):
    # FlopCounterMode counts SDPA as all S^2 pairs (no causal saving): compare with the `full` count
    arch = ArchConfig(**fields)
    measured = counted_flops(TransformerLM(arch), torch.randint(0, arch.vocab_size, (batch, seq)))
    assert flops(arch, Workload(batch, seq, 1), attention="full").forward_total == pytest.approx(measured, rel=0.01)


@pytest.mark.parametrize("changes", [
    dict(attention="local_global", window=8, global_tokens=3),
    dict(attention="local_global", window=8, global_tokens=3, block_size=4, kv_heads=2),
    dict(attention="local_global", window=5, global_tokens=2, gate="dynamic"),
    dict(attention="local_global", window=8, global_tokens=2, ffn="swiglu", intermediate_size=40, qk_norm=True),
])
def test_local_global_forward_flops_match_flop_counter_on_the_block_kernel(changes):
    arch = tiny(**changes)
    measured = counted_flops(TransformerLM(arch), torch.randint(0, 256, (2, 32)))
    assert flops(arch, Workload(2, 32, 1), attention="kernel").forward_total == pytest.approx(measured, rel=0.01)


@pytest.mark.parametrize("changes", [dict(kv_heads=2), dict(kv_heads=2, ffn="swiglu", intermediate_size=88),
                                     dict(ffn="geglu", qk_norm=True, post_norms=True)])
def test_dense_training_flops_are_three_forwards_like_flop_counter(changes):
    arch = tiny(**changes)
    measured = counted_flops(TransformerLM(arch), torch.randint(0, 256, (2, 32)), train=True)
    assert flops(arch, Workload(2, 32, 1), attention="full").step == measured


@pytest.mark.parametrize("changes", [
    dict(attention="local_global", window=8, global_tokens=3),
    dict(attention="local_global", window=5, global_tokens=2, gate="dynamic", block_size=4),
    dict(attention="local_global", window=8, global_tokens=3, ffn="swiglu", intermediate_size=40, post_norms=True),
])
def test_roofline_kernel_flops_match_a_counted_training_step(changes):
    # the block kernel's backward recomputes the scores (5 matmuls); the gate's global branch does not
    arch = tiny(**changes)
    measured = counted_flops(TransformerLM(arch), torch.randint(0, 256, (2, 32)), train=True)
    assert sum(step_time(arch, Workload(2, 32, 1), "cpu").flops.values()) == measured


LAYOUTS = [  # mixed per-layer attention: global (dense SDPA) and local (block kernel) layers in one model
    dict(n_layers=4, attention="local_global", window=8, global_tokens=3, global_every=2),
    dict(n_layers=3, attention="local_global", window=5, global_tokens=2, gate="dynamic", global_layers=[1],
         block_size=4),
    dict(n_layers=4, attention="local_global", window=6, gate="dynamic", global_every=4, sharing="all", kv_heads=2),
]


@pytest.mark.parametrize("changes", LAYOUTS)
def test_mixed_layout_flops_match_flop_counter_forward_and_training_step(changes):
    arch = tiny(**changes)
    idx = torch.randint(0, 256, (2, 32))
    model = TransformerLM(arch)
    assert flops(arch, Workload(2, 32, 1), attention="kernel").forward_total == counted_flops(model, idx)
    # the roofline's global layers run a flash kernel whose backward recomputes the scores: one QK^T more per layer
    n_global = sum(arch.layer_attention(i).kind == "global" for i in range(arch.n_layers))
    recompute = n_global * 2 * 32 * 32 * arch.hd * arch.n_heads * 2
    assert (sum(step_time(arch, Workload(2, 32, 1), "cpu").flops.values())
            == counted_flops(model, idx, train=True) + recompute)


@pytest.mark.parametrize("changes", LAYOUTS)
def test_mixed_layout_params_equal_the_models(changes):
    arch = tiny(**changes)
    model = TransformerLM(arch)
    assert param_counts(arch)["unique"] == sum(p.numel() for p in model.parameters())
    assert param_counts(arch)["total"] == model.param_counts()["total"]


def test_mixed_layout_attention_flops_are_the_sum_of_its_layers():
    """Each layer counted by its own kind: 1 global + 3 local layers = a quarter dense + three quarters windowed."""
    S, W, G = 512, 64, 4
    mixed = tiny(seq_len=S, n_layers=4, attention="local_global", window=W, global_tokens=G, global_every=4)
    work = Workload(1, S, 1)
    dense = S * (S + 1) // 2
    local = W * (W + 1) // 2 + (S - W) * W + G * (S - W) - G * (G - 1) // 2
    per_pair = 2 * mixed.hd * mixed.n_heads
    assert flops(mixed, work).forward["attn_scores"] == per_pair * (dense + 3 * local)


def test_nanogpt_gpt2_golden_value():
    gpt2 = ArchConfig(vocab_size=50257, seq_len=1024, n_layers=12, d_model=768, n_heads=12)
    assert flops(gpt2, Workload(1, 1024, 1), attention="full").step == 874_944_921_600


def test_causal_dense_counts_the_lower_triangle():
    arch, S = tiny(), 32
    full, causal = flops(arch, Workload(2, S, 1), "full"), flops(arch, Workload(2, S, 1), "causal")
    per_pair = 2 * arch.hd * arch.n_heads * 2 * arch.n_layers  # one product, batch 2, all layers
    assert full.forward["attn_scores"] - causal.forward["attn_scores"] == per_pair * (S * S - S * (S + 1) // 2)
    assert full.forward["qkv"] == causal.forward["qkv"]


@pytest.mark.parametrize("window, global_tokens", [(1, 0), (4, 2), (9, 5), (32, 3)])
def test_local_global_causal_pairs_equal_the_mask(window, global_tokens):
    S = 32
    arch = tiny(attention="local_global", window=window, global_tokens=global_tokens)
    q = torch.arange(S).view(-1, 1)
    visible = int(local_global_mask_mod(window, global_tokens)(0, 0, q, torch.arange(S).view(1, -1)).sum())
    per_pair = 2 * arch.hd * arch.n_heads * arch.n_layers
    assert flops(arch, Workload(1, S, 1)).forward["attn_values"] == per_pair * visible


def test_local_global_flops_below_dense_and_monotone_in_window():
    ratios = [estimate(dict(attention="local_global", window=w, global_tokens=16), target="gpt_1b").flops_ratio
              for w in (64, 128, 256, 512, 1024, 2048)]
    assert all(r < 1 for r in ratios[:-1]) and ratios == sorted(ratios)
    assert ratios[-1] == pytest.approx(1.0, rel=1e-3)  # a window of the whole sequence is dense (+ globals)


def test_train_total_scales_with_train_tokens():
    arch = tiny()
    one, ten = flops(arch, Workload(2, 32, 64)), flops(arch, Workload(2, 32, 640))
    assert ten.train_total == pytest.approx(10 * one.train_total) and one.train_total == one.step


# ---- parameters --------------------------------------------------------------------------------------------------


SHARING_CASES = [("none", None, "both", 4)] + [
    (pattern, m, scope, 4)
    for pattern, m in (("all", None), ("sequence", 2), ("cycle", 3), ("cycle_rev", 2), ("adjacent", None))
    for scope in ("attention", "ffn", "both")
] + [("adjacent", None, "both", 5), ("cycle", 2, "ffn", 5), ("ffn_block_diag", None, "ffn", 4),
     ("ffn_block_diag", None, "ffn", 5)]
GATED = dict(ffn="swiglu", intermediate_size=56, qk_norm=True, post_norms=True)  # Gemma 3's extras on a SwiGLU


@pytest.mark.parametrize("extra", [{}, GATED], ids=["gelu", "swiglu"])
@pytest.mark.parametrize("pattern, m, scope, layers", SHARING_CASES)
def test_unique_params_equal_the_models_unique_tensors(pattern, m, scope, layers, extra):
    arch = tiny(n_layers=layers, sharing=pattern, unique_layers=m, sharing_scope=scope, **extra)
    model = TransformerLM(arch)
    counts = param_counts(arch)
    assert counts["unique"] == sum(p.numel() for p in model.parameters())  # shared tensors counted once
    assert counts["total"] == model.param_counts()["total"]


@pytest.mark.parametrize("changes", [dict(gate="dynamic", attention="local_global", window=8, kv_heads=2),
                                     dict(kv_heads=1, group_share="qkv", tie_embeddings=False),
                                     dict(head_dim=12, ffn_mult=1.5),
                                     dict(head_dim=12, ffn="geglu", qk_norm=True, kv_heads=1, group_share="qkv")])
def test_unique_params_with_gate_grouping_and_untied_head(changes):
    arch = tiny(sharing="cycle", unique_layers=1, **changes)
    assert param_counts(arch)["unique"] == sum(p.numel() for p in TransformerLM(arch).parameters())


# ---- targets, knobs and ratios -------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["gpt_125m", "gpt_1b", "gpt_7b", "llama3.2_1b_32k", "llama3.1_8b_128k",
                                    "mistral_7b_32k", "qwen3_1.7b_128k", "gemma3_1b_32k"])
def test_dense_baseline_ratios_are_one_and_report_is_json(target):
    report = estimate({}, target=target, hardware="h100_sxm")
    d = report.to_dict()
    assert [d[k] for k in ("flops_ratio", "unique_params_ratio", "memory_ratio", "time_ratio")] == [1.0] * 4
    assert json.loads(json.dumps(d)) == d
    arch, work = load_target(target)
    assert d["params_unique"] == param_counts(arch)["unique"] and work.seq_len == arch.seq_len


def test_targets_have_their_advertised_sizes():
    sizes = {name: param_counts(load_target(name)[0])["unique"] for name in ("gpt_125m", "gpt_1b", "gpt_7b")}
    assert 80e6 < sizes["gpt_125m"] < 130e6 and 1.0e9 < sizes["gpt_1b"] < 1.4e9 and 6e9 < sizes["gpt_7b"] < 7.5e9


def test_apply_knobs_scales_fractions_to_the_target():
    proxy = ArchConfig(n_layers=4, n_heads=4, kv_heads=1, sharing="cycle", unique_layers=2, attention="local_global",
                       window=64, global_tokens=4, precision=dict(ffn="fp8_e4m3"))
    target, _ = load_target("gpt_1b")
    arch = apply_knobs(target, proxy)
    assert (arch.n_layers, arch.d_model, arch.seq_len) == (target.n_layers, target.d_model, target.seq_len)
    assert arch.n_kv == target.n_heads // 4 and arch.n_unique == target.n_layers // 2
    # a window keeps its share of the context (64 of 256 -> 512 of 2048); global tokens stay a count
    assert (arch.window, arch.global_tokens, arch.precision.ffn) == (512, 4, "fp8_e4m3")
    seq = apply_knobs(ArchConfig(n_layers=6, d_model=64, n_heads=2), ArchConfig(n_layers=4, sharing="sequence",
                                                                              unique_layers=1))
    assert 6 % seq.n_unique == 0
    report = estimate(proxy, target="gpt_1b", hardware="h100_sxm")
    assert report.arch == arch and report.flops_ratio < 1 and report.time_ratio < 1 and report.memory_ratio < 1


def test_grouping_and_sharing_reduce_params_and_memory():
    gqa, shared = estimate(dict(kv_heads=4)), estimate(dict(sharing="cycle", unique_layers=8))  # of Llama's 16 layers
    assert gqa.unique_params_ratio < 1 and gqa.flops_ratio < 1 and gqa.memory_ratio < 1
    # half the layers: half of what is not the 128256 x 2048 (tied) embedding and the final norm (20% of dense)
    dense = shared.baseline_params["unique"]
    layers = dense - 128256 * 2048 - 2048
    assert shared.params["unique"] == dense - layers // 2 and shared.flops_ratio == 1.0
    assert shared.unique_params_ratio == pytest.approx(0.598, abs=0.001)
    assert shared.memory_ratio < 1


# ---- precision, memory, roofline ------------------------------------------------------------------------------------


def _precision(fmt: str) -> dict:
    return dict(precision=dict(attention=fmt, ffn=fmt, embed="bf16" if fmt.startswith("fp8") else fmt))


def test_fp8_faster_than_bf16_faster_than_fp32_on_h100_for_an_ffn_heavy_model():
    arch, work = load_target("gpt_1b")
    ffn_heavy = arch.replace(ffn_mult=8.0)
    t = {fmt: step_time(apply_knobs(ffn_heavy, _precision(fmt)), work, "h100_sxm").total
         for fmt in ("fp32", "bf16", "fp8_e4m3")}
    assert t["fp8_e4m3"] < t["bf16"] < t["fp32"]
    assert t["fp32"] / t["bf16"] > 5  # tensor cores vs the fp32 FMA rate


def test_tf32_matmuls_are_faster_than_fp32():
    arch, work = load_target("gpt_125m")
    assert step_time(arch, work, "a100_sxm", fp32_matmul="tf32").total < step_time(arch, work, "a100_sxm").total


def test_a100_has_no_fp8_and_falls_back_to_bf16_rate():
    a100 = load_hardware("a100_sxm")
    assert a100.matmul_flops_per_s("fp8_e4m3") == a100.matmul_flops_per_s("bf16")
    h100 = load_hardware("h100_sxm")
    assert h100.matmul_flops_per_s("fp8_e5m2") == pytest.approx(2 * h100.matmul_flops_per_s("bf16"), rel=1e-3)


def test_memory_shrinks_with_precision_and_counts_adam_state():
    arch, work = load_target("gpt_125m")
    mem = {fmt: memory(apply_knobs(arch, _precision(fmt)), work) for fmt in ("fp32", "bf16", "fp8_e4m3")}
    assert mem["fp8_e4m3"].total < mem["bf16"].total < mem["fp32"].total
    assert mem["fp8_e4m3"].activations_total < mem["bf16"].activations_total
    unique = param_counts(arch)["unique"]
    assert (mem["fp32"].weights, mem["fp32"].gradients, mem["fp32"].optimizer) == (4 * unique, 4 * unique, 8 * unique)
    assert memory(arch, work, optimizer="sgd").optimizer == 4 * unique


def test_activations_scale_with_batch_and_sparse_attention_saves_h100_time():
    arch, work = load_target("gpt_1b")
    double = Workload(2 * work.batch, work.seq_len, work.train_tokens)
    assert memory(arch, double).activations_total == 2 * memory(arch, work).activations_total
    local = apply_knobs(arch, dict(attention="local_global", window=128, global_tokens=16))
    dense_t, local_t = step_time(arch, work, "h100_sxm"), step_time(local, work, "h100_sxm")
    # flex: 16 query blocks of 128 see 2 key blocks + 16 globals; flash: 16*17/2 tiles of 128 x 128
    assert local_t.flops["attn_scores"] / dense_t.flops["attn_scores"] == (16 * 128 * (2 * 128 + 16)) / (128**2 * 136)
    assert local_t.seconds["attn_scores"] < 0.3 * dense_t.seconds["attn_scores"]


def test_every_hardware_profile_loads():
    for name in profile_names("hardware"):
        hw = load_hardware(name)
        assert all(hw.matmul_flops_per_s(f) > 0 for f in ("fp32", "bf16", "fp16", "fp8_e4m3")) and hw.bandwidth_gbs > 0
    assert {"h100_sxm", "h200", "a100_sxm", "cpu"} <= set(profile_names("hardware"))


# ---- bad input ----------------------------------------------------------------------------------------------------


def test_unknown_hardware_and_target_name_the_valid_ones():
    with pytest.raises(ValueError, match="h100_sxm") as err:
        load_hardware("tpu_v9")
    assert "tpu_v9" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="gpt_1b"):
        estimate({}, target="gpt_99b")
    with pytest.raises(ValueError, match="a100_sxm"):
        estimate({}, hardware="abacus")


def test_impossible_shapes_and_options_raise():
    arch = tiny()
    with pytest.raises(ValueError, match="seq_len"):
        flops(arch, Workload(1, 64, 1))  # longer than the positional embedding
    with pytest.raises(ValueError, match="batch"):
        Workload(0, 32, 1)
    with pytest.raises(ValueError, match="global_tokens"):
        apply_knobs(load_target("gpt_125m")[0], dict(attention="local_global", window=64, global_tokens=4096))
    with pytest.raises(ValueError, match="valid are"):
        apply_knobs(arch, dict(d_model=64))  # a size is not a knob
    with pytest.raises(ValueError, match="ffn_blocks"):
        apply_knobs(ArchConfig(d_model=30, n_heads=3),
                    dict(sharing="ffn_block_diag", sharing_scope="ffn", ffn_blocks=4))
    with pytest.raises(ValueError, match="adamw"):
        memory(arch, Workload(1, 32, 1), optimizer="lion")
    with pytest.raises(ValueError, match="causal"):
        flops(arch, Workload(1, 32, 1), attention="sparse")
    with pytest.raises(ValueError, match="tf32"):
        step_time(arch, Workload(1, 32, 1), "cpu", fp32_matmul="fp64")


def test_a_broken_hardware_profile_names_its_file_and_key(tmp_path, monkeypatch):
    (tmp_path / "hardware").mkdir()
    (tmp_path / "hardware" / "toy.yaml").write_text(
        "peak_tflops: {fp32: 1, tf32: 1, bf16: 2, fp16: 2}\nmemory_bandwidth_gbs: 10\nmemory_gb: 1\n"
        "special_gops: {exp: 1, tanh: 1}\n")
    monkeypatch.setattr("nas.profiles.conf_dir", lambda: tmp_path)
    with pytest.raises(ValueError, match=r"toy.yaml: peak_tflops.fp8='missing'"):
        load_hardware("toy")


def test_a_broken_published_mapping_names_its_file_and_knob(tmp_path, monkeypatch):
    (tmp_path / "target").mkdir()
    arch = "arch: {vocab_size: 64, seq_len: 32, n_layers: 2, d_model: 32, n_heads: 4}\n"
    work = "workload: {batch: 1, seq_len: 32, train_tokens: 32}\n"
    (tmp_path / "target" / "toy.yaml").write_text(arch + work + "published: {colour: 1}\n")
    (tmp_path / "target" / "toy_kv.yaml").write_text(arch + work + "published: {kv_heads: 3}\n")
    (tmp_path / "target" / "toy_knob.yaml").write_text(arch.replace("}", ", kv_heads: 2}") + work)
    monkeypatch.setattr("nas.profiles.conf_dir", lambda: tmp_path)
    with pytest.raises(ValueError, match=r"toy.yaml: published: knob 'colour' is not a knob: valid are attention"):
        published_arch("toy")
    with pytest.raises(ValueError, match=r"toy_kv.yaml: published: .*kv_heads=3 is invalid: must divide n_heads=4"):
        published_arch("toy_kv")
    with pytest.raises(ValueError, match=r"toy_knob.yaml: arch.kv_heads is not a size field"):
        load_target("toy_knob")  # a published knob belongs under `published:`, the dense sizes under `arch:`
    workload = {"batch": 1, "seq_len": 32, "train_tokens": 32}
    assert published_arch({"name": "t", "arch": {"seq_len": 32}, "workload": workload}) == ArchConfig(seq_len=32)
