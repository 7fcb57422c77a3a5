"""Real targets (conf/target/*.yaml, sizes from each model's published config.json) against transformers' own models.

Each model is built from its published configuration on the meta device (no weights, no downloads); nas.cost's
parameter count must equal sum(p.numel()) of the transformers model exactly. Small random Llama, Qwen3 and Gemma 3
models check that TransformerLM computes what transformers computes (SwiGLU, GeGLU, GQA, q/k and post norms,
rotary base).
"""

from __future__ import annotations

import pytest
import torch

from nas.cost import estimate, load_target, param_counts, published_arch
from nas.model import ArchConfig, TransformerLM
from nas.model.config import LayerAttention
from nas.model.hf import FAMILIES, hf_state_dict
from nas.profiles import profile_names, read_profile

transformers = pytest.importorskip("transformers")

# model id -> (transformers config class, the published config.json fields that size the model)
PUBLISHED = {
    "meta-llama/Llama-3.2-1B": ("LlamaConfig", dict(
        vocab_size=128256, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        head_dim=64, intermediate_size=8192, hidden_act="silu", tie_word_embeddings=True, rope_theta=500000.0,
        max_position_embeddings=131072, attention_bias=False, mlp_bias=False)),
    "meta-llama/Llama-3.1-8B": ("LlamaConfig", dict(
        vocab_size=128256, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, hidden_act="silu", tie_word_embeddings=False, rope_theta=500000.0,
        max_position_embeddings=131072, attention_bias=False, mlp_bias=False)),
    "mistralai/Mistral-7B-v0.1": ("MistralConfig", dict(
        vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, hidden_act="silu", tie_word_embeddings=False, rope_theta=10000.0,
        max_position_embeddings=32768, sliding_window=4096)),
    "Qwen/Qwen3-1.7B": ("Qwen3Config", dict(
        vocab_size=151936, hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, intermediate_size=6144, hidden_act="silu", tie_word_embeddings=True, rope_theta=1000000.0,
        max_position_embeddings=40960, attention_bias=False, use_sliding_window=False)),
    "google/gemma-3-1b-pt": ("Gemma3TextConfig", dict(
        vocab_size=262144, hidden_size=1152, num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
        head_dim=256, intermediate_size=6912, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
        max_position_embeddings=32768, query_pre_attn_scalar=256, sliding_window=512, attention_bias=False,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(26)])),
}
TARGETS = {  # conf/target name -> the model it stands for
    "llama3.2_1b_32k": "meta-llama/Llama-3.2-1B", "llama3.2_1b_128k": "meta-llama/Llama-3.2-1B",
    "llama3.1_8b_32k": "meta-llama/Llama-3.1-8B", "llama3.1_8b_128k": "meta-llama/Llama-3.1-8B",
    "mistral_7b_32k": "mistralai/Mistral-7B-v0.1",
    "qwen3_1.7b_32k": "Qwen/Qwen3-1.7B", "qwen3_1.7b_128k": "Qwen/Qwen3-1.7B",
    "gemma3_1b_32k": "google/gemma-3-1b-pt",
}
GATED = {"silu": "swiglu", "gelu_pytorch_tanh": "geglu"}


def hf_config(model_id: str):
    name, fields = PUBLISHED[model_id]
    return getattr(transformers, name)(**fields)


def hf_param_count(config) -> int:
    """sum(p.numel()) of the transformers causal LM, built on the meta device (tied tensors counted once)."""
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def test_every_published_target_is_checked_here():
    published = {n for n in profile_names("target") if "published" in read_profile("target", n)[1]}
    assert published == set(TARGETS)


@pytest.mark.parametrize("model_id", sorted(PUBLISHED))
def test_parameter_count_equals_transformers(model_id):
    expected = hf_param_count(hf_config(model_id))
    for target in (t for t, m in TARGETS.items() if m == model_id):
        counts = param_counts(published_arch(target))
        assert counts["total"] == counts["unique"] == expected, target


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_fields_are_the_published_config(target):
    arch, work = load_target(target)
    pub = published_arch(target)
    cfg = hf_config(TARGETS[target])
    act = getattr(cfg, "hidden_act", None) or cfg.hidden_activation
    assert (arch.vocab_size, arch.d_model, arch.n_layers, arch.n_heads, pub.n_kv, arch.hd, arch.ffn_hidden,
            arch.tie_embeddings, arch.ffn) == (
        cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
        getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads, cfg.intermediate_size,
        cfg.tie_word_embeddings, GATED[act])
    rope = cfg.rope_parameters.get("full_attention", cfg.rope_parameters)  # Gemma 3: per layer type
    assert arch.rope_theta == rope["rope_theta"]
    assert arch.n_heads == pub.n_heads and work.seq_len == arch.seq_len
    window = getattr(cfg, "sliding_window", None)
    if pub.attention == "local_global":  # every layer windowed (Mistral) or some (Gemma 3's layer_types)
        assert (pub.window, pub.global_tokens) == (window, 0)
        types = getattr(cfg, "layer_types", None) or ["sliding_attention"] * cfg.num_hidden_layers
        assert [pub.layer_attention(i).kind for i in range(arch.n_layers)] == [
            "global" if t == "full_attention" else "local" for t in types]


def test_published_knobs_cost_less_than_the_dense_baseline():
    """GQA / MQA saves parameters and FLOPs; Mistral's 4096-token window (of 32768) saves most attention FLOPs."""
    for target in TARGETS:
        report = estimate(published_arch(target), target=target)
        assert report.unique_params_ratio < 1 and report.flops_ratio < 1 and report.memory_ratio < 1, target
    mistral = estimate(published_arch("mistral_7b_32k"), target="mistral_7b_32k")
    gqa_only = estimate({"kv_heads": 8}, target="mistral_7b_32k")
    window = 4096
    pairs = window * (window + 1) // 2 + (32768 - window) * window  # causal pairs a 4096 window keeps, per head
    scores = mistral.flops.forward["attn_scores"] / gqa_only.flops.forward["attn_scores"]
    assert scores == pytest.approx(pairs / (32768 * 32769 // 2), rel=1e-12)


EPS = torch.finfo(torch.float32).eps  # nn.RMSNorm's default eps
SHARED = dict(vocab_size=97, seq_len=32, n_layers=2, d_model=48, n_heads=4, head_dim=16)
TINY_FAMILIES = [
    ("LlamaConfig", ArchConfig(**{**SHARED, "n_heads": 6, "head_dim": None}, kv_heads=2, ffn="swiglu",
                               intermediate_size=72, tie_embeddings=False, rope_theta=500000.0), {}),
    ("Qwen3Config", ArchConfig(**SHARED, kv_heads=2, ffn="swiglu", intermediate_size=80, qk_norm=True,
                               rope_theta=1000000.0), {}),
    ("Gemma3TextConfig", ArchConfig(**SHARED, kv_heads=1, ffn="geglu", intermediate_size=80, qk_norm=True,
                                    post_norms=True, tie_embeddings=False, rope_theta=1000000.0),
     dict(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=16, layer_types=["full_attention"] * 2,
          rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
    # per-layer layouts: Gemma 3's local and global layers (one rotary base for both: ours has one), Mistral's window
    ("Gemma3TextConfig", ArchConfig(**SHARED, kv_heads=1, ffn="geglu", intermediate_size=80, qk_norm=True,
                                    post_norms=True, tie_embeddings=False, rope_theta=10000.0,
                                    attention="local_global", window=5, global_tokens=0, global_every=2),
     dict(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=16, sliding_window=5,
          layer_types=["sliding_attention", "full_attention"],
          rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 10000.0},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
    ("MistralConfig", ArchConfig(**{**SHARED, "n_heads": 6, "head_dim": None}, kv_heads=2, ffn="swiglu",
                                 intermediate_size=72, tie_embeddings=False, attention="local_global", window=7),
     dict(hidden_act="silu", rope_theta=10000.0, sliding_window=7)),
]


@pytest.mark.parametrize("family, arch, extra", TINY_FAMILIES,
                         ids=[f[0] + ("_layout" if f[1].attention != "dense" else "") for f in TINY_FAMILIES])
def test_logits_equal_transformers_with_the_same_weights(family, arch, extra):
    """SwiGLU, GQA, rotary base and untied head (Llama); q/k norms, head_dim != d/H (Qwen3); GeGLU, MQA, post norms
    (Gemma 3); sliding-window layers among full ones (Gemma 3's layer_types) and in every layer (Mistral)."""
    torch.manual_seed(0)
    ours = TransformerLM(arch).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():  # random norms too, so that every weight is used where it should be
            p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    fields = dict(vocab_size=arch.vocab_size, hidden_size=arch.d_model, num_hidden_layers=arch.n_layers,
                  num_attention_heads=arch.n_heads, num_key_value_heads=arch.n_kv, head_dim=arch.hd,
                  intermediate_size=arch.ffn_hidden, tie_word_embeddings=arch.tie_embeddings,
                  max_position_embeddings=arch.seq_len, rms_norm_eps=EPS)
    if not extra:
        fields.update(hidden_act="silu", rope_theta=arch.rope_theta)
    hf = transformers.AutoModelForCausalLM.from_config(getattr(transformers, family)(**fields, **extra)).eval()
    state = hf_state_dict(ours, FAMILIES[hf.config.model_type])  # nas.model.hf's weight mapping
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert unexpected == [] and missing == ([] if not arch.tie_embeddings else ["lm_head.weight"])
    idx = torch.randint(0, arch.vocab_size, (2, arch.seq_len))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=2e-5, rtol=1e-4)


# ---- named layouts: each one config, costed against a closed-form count ------------------------------------------


def _dense(S: int) -> int:
    return S * (S + 1) // 2


def _window(S: int, W: int) -> int:
    return W * (W + 1) // 2 + (S - W) * W


def _globals(S: int, G: int) -> int:  # a causal branch over the first G keys only
    return G * (G + 1) // 2 + (S - G) * G


def _model_file(name: str) -> ArchConfig:
    from nas.profiles import conf_dir

    return ArchConfig.from_yaml(conf_dir() / "model" / f"{name}.yaml")


def _kinds(arch: ArchConfig) -> list[str]:
    return [arch.layer_attention(i).kind for i in range(arch.n_layers)]


def _scores(arch: ArchConfig, seq_len: int) -> int:
    """Forward QK^T FLOPs of one sequence (causal pairs), by nas.cost."""
    from nas.cost import Workload, flops

    return flops(arch, Workload(1, seq_len, 1)).forward["attn_scores"]


def test_mistral_is_a_4096_window_in_every_layer():
    arch = published_arch("mistral_7b_32k")
    assert _kinds(arch) == ["local"] * 32 and arch.window == 4096 and arch.global_tokens == 0
    assert _scores(arch, 32768) == 2 * arch.hd * arch.n_heads * 32 * _window(32768, 4096)


def test_gemma3_is_five_local_to_one_global_with_a_512_window():
    arch = published_arch("gemma3_1b_32k")
    cfg = transformers.Gemma3TextConfig(num_hidden_layers=26, sliding_window=512)  # layer_types from its pattern, 6
    assert _kinds(arch) == ["global" if t == "full_attention" else "local" for t in cfg.layer_types]
    assert _kinds(arch).count("global") == 4 and arch.window == cfg.sliding_window
    assert _scores(arch, 32768) == 2 * arch.hd * arch.n_heads * (4 * _dense(32768) + 22 * _window(32768, 512))
    assert estimate(arch, target="gemma3_1b_32k").flops_ratio < 1


def test_gpt_oss_attention_alternates_a_128_window_with_full_layers_and_has_no_global_tokens():
    arch = _model_file("gpt_oss_20b_attention")
    cfg = transformers.GptOssConfig(num_hidden_layers=24, num_local_experts=32, vocab_size=201088)  # gpt-oss-20b
    assert _kinds(arch) == ["global" if t == "full_attention" else "local" for t in cfg.layer_types]
    assert (arch.window, arch.d_model, arch.n_heads, arch.n_kv, arch.hd, arch.seq_len) == (
        cfg.sliding_window, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
        cfg.max_position_embeddings)
    assert arch.global_tokens == 0  # its learned per-head sinks are a softmax logit, not key positions
    S = arch.seq_len
    assert _scores(arch, S) == 2 * arch.hd * arch.n_heads * 12 * (_dense(S) + _window(S, 128))


def test_seed_recipe_is_a_512_window_16_global_tokens_and_the_gate_on_every_layer():
    arch = _model_file("seed_recipe_llama3.2_1b_32k")
    assert {arch.layer_attention(i) for i in range(arch.n_layers)} == {
        LayerAttention("local", 512, 16, True)}
    target, _ = load_target("llama3.2_1b_32k")
    assert {k: getattr(arch, k) for k in ("vocab_size", "n_layers", "d_model", "n_heads", "ffn_hidden")} == {
        k: getattr(target, k) for k in ("vocab_size", "n_layers", "d_model", "n_heads", "ffn_hidden")}
    S = 32768  # the gate's two branches each have their own softmax: the window's pairs and the global tokens'
    assert _scores(arch, S) == 2 * arch.hd * arch.n_heads * 16 * (_window(S, 512) + _globals(S, 16))
    assert estimate(arch, target="llama3.2_1b_32k").flops_ratio < 1
