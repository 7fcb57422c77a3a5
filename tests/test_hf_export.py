"""Hugging Face export and import (nas.model.hf): transformers' own models are the oracle.

Every exported family and knob gives nas's logits (fp32, CPU) when transformers loads the folder with
AutoModelForCausalLM.from_pretrained (no custom code), including positions beyond the window; cached greedy
generation matches nas's; each knob no family can express is refused by name with nothing written; policies
choose among the expressible points; an imported config.json costs exactly transformers' parameter count.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.cost import load_target, param_counts, published_arch
from nas.export.command import run_from_config
from nas.model import ArchConfig, TransformerLM
from nas.model.hf import (
    ExportRefused,
    choose_family,
    hf_config,
    refusal,
    require_hf,
    write_hf,
)
from nas.study.store import Store
from tests.test_export import seed_study

transformers = pytest.importorskip("transformers")

SIZES = dict(vocab_size=97, seq_len=32, n_layers=2, d_model=48, n_heads=4, head_dim=16, ffn="swiglu",
             intermediate_size=80)
WINDOW = dict(attention="local_global", window=8, global_tokens=0)  # seq_len 32: 24 positions see past the window
# (family, the knobs it carries in this case)
CASES = [
    ("llama", dict(kv_heads=2, tie_embeddings=False, rope_theta=500000.0)),  # GQA, untied head, rotary base
    ("llama", dict(kv_heads=1, ffn="geglu", head_dim=None, n_heads=6)),  # MQA, GeGLU, tied, head_dim = d / H
    ("mistral", dict(kv_heads=2, **WINDOW)),  # one window in every layer
    ("mistral", dict(tie_embeddings=False, rope_theta=1e6, window=1, attention="local_global")),  # W = 1
    ("qwen3", dict(kv_heads=2, qk_norm=True, rope_theta=1e6)),  # q/k norms, tied
    ("qwen3", dict(qk_norm=True, ffn="geglu", tie_embeddings=False, **WINDOW)),  # window via layer_types
    ("gemma3_text", dict(kv_heads=1, ffn="geglu", qk_norm=True, post_norms=True, tie_embeddings=False,
                         rope_theta=1e6)),  # GeGLU, post norms, MQA
    ("gemma3_text", dict(kv_heads=2, qk_norm=True, post_norms=True, tie_embeddings=False, **WINDOW)),  # window
    ("ministral", dict(kv_heads=2, global_every=2, **WINDOW)),  # per-layer local:global, Llama blocks
    ("qwen3", dict(qk_norm=True, global_layers=[0], **WINDOW)),  # an explicit placement via layer_types
    ("gemma3_text", dict(qk_norm=True, post_norms=True, tie_embeddings=False, global_every=2, **WINDOW)),
]


def random_model(arch: ArchConfig, seed: int = 0) -> TransformerLM:
    """TransformerLM with random weights, norms included (so every weight is used where it should be)."""
    torch.manual_seed(seed)
    model = TransformerLM(arch).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    return model


def load(out: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()


@pytest.mark.parametrize("family, knobs", CASES, ids=[f"{f}-{i}" for i, (f, _) in enumerate(CASES)])
def test_exported_model_gives_nas_logits(family, knobs, tmp_path):
    arch = ArchConfig(**{**SIZES, **knobs})
    model = random_model(arch)
    written = write_hf(arch, tmp_path / "hf", model=model)
    assert written.family.model_type == family
    assert sorted(p.name for p in written.out.iterdir()) == ["config.json", "generation_config.json",
                                                             "model.safetensors"]
    hf = load(written.out)
    assert type(hf).__name__ == written.family.architecture
    assert sum(p.numel() for p in hf.parameters()) == param_counts(arch)["unique"]  # nothing extra, nothing lost
    idx = torch.randint(0, arch.vocab_size, (2, arch.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx), atol=1e-4, rtol=1e-4)


def test_window_boundary_is_the_same_and_one_more_key_differs(tmp_path):
    """nas: i - W < j <= i; transformers' sliding_window W keeps exactly that set: W + 1 or W - 1 would change the
    logits of the positions past the window only."""
    arch = ArchConfig(**{**SIZES, "kv_heads": 2, **WINDOW})
    model = random_model(arch)
    write_hf(arch, tmp_path / "hf", model=model)
    idx = torch.randint(0, arch.vocab_size, (1, arch.seq_len), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(idx)
        for window, same in ((8, True), (9, False), (7, False)):
            config = transformers.AutoConfig.from_pretrained(tmp_path / "hf")
            config.sliding_window = window
            hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", config=config).eval()
            logits = hf(idx).logits
            seen = min(window, arch.window)  # positions before this see the same keys under both windows
            torch.testing.assert_close(logits[:, :seen], ours[:, :seen], atol=1e-4, rtol=1e-4)
            assert torch.allclose(logits, ours, atol=1e-4, rtol=1e-4) == same, window


@pytest.mark.parametrize("knobs", [dict(kv_heads=2, **WINDOW), dict(qk_norm=True, post_norms=True,
                                                                   tie_embeddings=False, **WINDOW)])
def test_cached_generation_past_the_window_equals_nas_greedy(knobs, tmp_path):
    """generate (KV cache, sliding-window cache layers) picks nas's greedy tokens well past the window."""
    arch = ArchConfig(**{**SIZES, **knobs})
    model = random_model(arch, seed=3)
    write_hf(arch, tmp_path / "hf", model=model)
    prompt = torch.randint(0, arch.vocab_size, (1, 6), generator=torch.Generator().manual_seed(4))
    new = arch.seq_len - prompt.size(1)
    with torch.no_grad():
        out = load(tmp_path / "hf").generate(prompt, max_new_tokens=new, do_sample=False)
        ours = prompt
        for _ in range(new):
            ours = torch.cat([ours, model(ours)[:, -1:].argmax(-1)], dim=1)
    assert out.tolist() == ours.tolist()


# ---- refusals: one line naming the knob and the nearest thing that exists; nothing written --------------------------
REFUSED = [
    (dict(attention="local_global", window=8, global_tokens=2), "global_tokens=2: ", "gpt-oss"),
    (dict(attention="local_global", window=8, gate="dynamic"), "gate=dynamic: ", "gate=none"),
    (dict(sharing="cycle", unique_layers=1), "sharing=cycle: ", "sharing=none"),
    (dict(sharing="adjacent"), "sharing=adjacent: ", "sharing=none"),
    (dict(sharing="ffn_block_diag", ffn_blocks=4), "sharing=ffn_block_diag: ", "FFN sub-blocks"),
    (dict(precision={"ffn": "fp8_e4m3"}), "precision.ffn=fp8_e4m3: ", "fp32 weights everywhere"),
    (dict(precision={"attention": "bf16"}), "precision.attention=bf16: ", "fp32 weights everywhere"),
    (dict(precision={"ffn": "adaptive"}), "precision.ffn=adaptive: ", "fp32 weights everywhere"),
    (dict(kv_heads=2, group_share="qkv"), "group_share=qkv: ", "group_share=kv"),
    (dict(positions="learned"), "positions=learned: ", "positions=rope"),
    (dict(ffn="gelu", intermediate_size=None), "ffn=gelu: ", "ffn=geglu"),
    (dict(post_norms=True), "post_norms=true with qk_norm=false: ", "qk_norm=true"),
    (dict(post_norms=True, qk_norm=True), "tie_embeddings=true with post_norms", "tie_embeddings=false"),
]


@pytest.mark.parametrize("knobs, starts, nearest", REFUSED, ids=[r[1].split(":")[0] for r in REFUSED])
def test_inexpressible_knob_is_refused_by_name_and_nothing_is_written(knobs, starts, nearest, tmp_path):
    arch = ArchConfig(**{**SIZES, **knobs})
    with pytest.raises(ExportRefused) as err:
        write_hf(arch, tmp_path / "hf", model=TransformerLM(arch))
    message = str(err.value)
    assert message.startswith(starts) and nearest in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_qkv_sharing_with_one_head_per_group_is_plain_attention():
    family, _ = choose_family(ArchConfig(**SIZES, group_share="qkv"))
    assert family.model_type == "llama"


def test_missing_extra_is_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ValueError, match=r'need the `hf` extra .*: pip install -e "\.\[hf\]"$'):
        require_hf()


# ---- the export command: policies among expressible points, checkpoints ---------------------------------------------
SWIGLU = {"ffn": "swiglu"}
HF_POINTS = [  # (quality, flops_ratio, params): full front 4, 2, 1, 0 (knee 2); trials 1 and 2 are refused
    (1.00, 1.00, {"attention": "dense", **SWIGLU}),
    (1.02, 0.50, {"attention": "local_global", "window": 16, "global_tokens": 4, **SWIGLU}),
    (1.10, 0.30, {"attention": "local_global", "window": 8, "gate": "dynamic", **SWIGLU}),
    (1.05, 0.60, {"attention": "local_global", "window": 24, **SWIGLU}),
    (1.50, 0.20, {"attention": "local_global", "window": 4, **SWIGLU}),
]


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("x")
    s = Store(f"sqlite:///{tmp_path / 'nas.db'}")
    seed_study(s, "s1", corpus, points=HF_POINTS)
    yield s
    s.close()


def test_knee_among_expressible_points_names_what_it_passed_over(store, tmp_path):
    """Expressible front 4 (0.2, 1.5), 3 (0.6, 1.05), 0 (1, 1): normalised 1 - x - y is 0.4 at trial 3."""
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        done = run_from_config({"study": "s1", "store": {"url": store.url}, "format": "hf",
                                "out": str(tmp_path / "hf")}, out=out)
    text = log.read_text()
    assert done.point.number == 3
    assert "passed over trial 1 (quality=1.0200, flops_ratio=0.5000): global_tokens=4: " in text
    assert "passed over trial 2 (quality=1.1000, flops_ratio=0.3000): gate=dynamic: " in text
    assert "family: MistralForCausalLM (model_type mistral): one window in every layer" in text
    config = transformers.AutoConfig.from_pretrained(tmp_path / "hf")
    arch = ArchConfig.from_dict(next(t for t in store.trials("s1") if t.number == 3).target_arch)
    assert (config.sliding_window, config.vocab_size, config.hidden_size, config.num_key_value_heads) == (
        24, arch.vocab_size, arch.d_model, arch.n_kv)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)
    assert store.exports("s1")[-1]["policy"] == {"policy": "knee", "format": "hf"}


def test_max_quality_passes_over_better_refused_points(store, tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        done = run_from_config({"study": "s1", "store": {"url": store.url}, "format": "hf", "policy": "max_quality",
                                "max_compute": 0.55, "out": str(tmp_path / "hf")}, out=out)
    assert done.point.number == 4
    passed = [line for line in log.read_text().splitlines() if line.startswith("passed over")]
    assert [line.split(" (")[0] for line in passed] == ["passed over trial 2", "passed over trial 1"]


def test_cli_refuses_a_trial_in_one_line_and_writes_nothing(store, tmp_path):
    cmd = [sys.executable, "-m", "nas.export", "study=s1", f"store.url={store.url}", "format=hf",
           f"out={tmp_path / 'hf'}"]
    bad = subprocess.run(cmd + ["policy=trial", "trial=2"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: trial=2 cannot be exported as format=hf: gate=dynamic: ")
    assert not (tmp_path / "hf").exists() and store.exports("s1") == []
    ok = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "passed over trial 1" in ok.stdout and "family: MistralForCausalLM" in ok.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert again.returncode == 2 and "exists and is not an empty folder" in again.stderr


@pytest.mark.parametrize("options, message", [
    ({"format": "onnx"}, "format='onnx' is unknown: expected one of nas, hf"),
    ({"format": "hf"}, "format=hf needs out=DIR"),
    ({"out": "x"}, "out='x' needs format=hf"),
    ({"checkpoint": "x.pt", "format": "hf", "out": "o"}, "checkpoint='x.pt': no such file"),
])
def test_format_options_are_checked_first(store, tmp_path, options, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        run_from_config({"study": "s1", "store": {"url": store.url}, **options})
    assert store.exports("s1") == []


def test_trained_model_loads_in_transformers_with_its_logits(tmp_path, monkeypatch):
    """nas.train export=hf -> <out_dir>/hf, and nas.export checkpoint=... format=hf: from_pretrained gives the
    trained model's logits; an architecture no family expresses is refused before training."""
    from nas.train import run_from_config as train_from_config
    from nas.train.checkpoint import load_checkpoint

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(Path(torch.__file__).read_bytes()[:20000])
    arch = ArchConfig(seq_len=32, n_layers=2, d_model=32, n_heads=4, kv_heads=2, ffn="swiglu", intermediate_size=64,
                      attention="local_global", window=8)
    conf = dict(model=arch.to_dict(), target=None, size=None, export="hf", steps=2, batch_size=2, micro_batch=2,
                lr=3e-3, warmup=1, corpus=str(corpus), log_every=1, eval_every=2, eval_batches=1, ckpt_every=2,
                out_dir=str(tmp_path / "run"), device="cpu", seed=0, threads=1, progress=False)
    with pytest.raises(ValueError, match=r"^export=hf cannot write this model: global_tokens=2: "):
        train_from_config({**conf, "model": arch.replace(global_tokens=2).to_dict()})
    assert not (tmp_path / "run").exists()
    result = train_from_config(conf)
    out = tmp_path / "hf"
    with open(tmp_path / "log.txt", "w") as log:
        assert run_from_config({"checkpoint": str(result.checkpoint), "format": "hf", "out": str(out)}, out=log) == out
    assert "family: MistralForCausalLM" in (tmp_path / "log.txt").read_text()
    model = TransformerLM(arch).eval()
    model.load_state_dict(load_checkpoint(result.checkpoint)["model"])
    idx = torch.tensor([list(b"def forward(self, x):\n    return x + self.weight")[:32]])
    for folder in (result.out_dir / "hf", out):
        hf = load(folder)
        assert hf.config.vocab_size == 256  # nas's byte-level vocabulary, carried as is
        with torch.no_grad():
            torch.testing.assert_close(hf(idx).logits, model(idx), atol=1e-4, rtol=1e-4)


# ---- import: target=hf:PATH ---------------------------------------------------------------------------------------
IMPORTED = {
    "llama": ("LlamaConfig", dict(vocab_size=1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=8,
                                  num_key_value_heads=2, intermediate_size=176, tie_word_embeddings=False,
                                  max_position_embeddings=512, rope_parameters={"rope_type": "default",
                                                                                "rope_theta": 500000.0})),
    "mistral": ("MistralConfig", dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=1, intermediate_size=128, max_position_embeddings=512,
                                      sliding_window=128)),
    "qwen3": ("Qwen3Config", dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=32, intermediate_size=96,
                                  tie_word_embeddings=True, max_position_embeddings=256)),
    "gemma3_text": ("Gemma3TextConfig", dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                                             intermediate_size=96, max_position_embeddings=256, sliding_window=64,
                                             layer_types=["sliding_attention"] * 2)),
}


def hf_param_count(config) -> int:
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", sorted(IMPORTED))
def test_imported_config_costs_transformers_parameter_count(family, tmp_path):
    name, fields = IMPORTED[family]
    config = getattr(transformers, name)(**fields)
    config.save_pretrained(tmp_path)
    target = f"hf:{tmp_path}"
    dense, work = load_target(target)
    assert dense.attention == "dense" and work.seq_len == fields["max_position_embeddings"]
    published = published_arch(target)
    counts = param_counts(published)
    assert counts["total"] == counts["unique"] == hf_param_count(config)
    assert published.n_kv == fields["num_key_value_heads"]
    window = fields.get("sliding_window")
    assert published.window == window
    # the round trip: the imported arch exports to the same family and the same parameter count (a tied Gemma 3
    # is refused: nas does not scale its embedding as Gemma does)
    refused = refusal(published)
    if refused is None:
        chosen = choose_family(published)[0]
        assert chosen.model_type == family and hf_param_count(hf_config(published, chosen)) == counts["total"]
    else:
        assert family == "gemma3_text" and refused.startswith("tie_embeddings=true")
    assert (tmp_path / "config.json").is_file() and load_target(f"hf:{tmp_path / 'config.json'}")[0] == dense


def test_import_refusals_are_one_line(tmp_path):
    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match=r"model_type='gpt2' is not supported: expected one of llama, mistral, "):
        load_target(f"hf:{tmp_path / 'gpt2'}")
    with pytest.raises(ValueError, match=r"no config.json there"):
        load_target(f"hf:{tmp_path / 'none'}")
    transformers.LlamaConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=64,
                             attention_bias=True).save_pretrained(tmp_path / "bias")
    with pytest.raises(ValueError, match=r"attention_bias=true is not modelled"):
        load_target(f"hf:{tmp_path / 'bias'}")
    gemma = dict(IMPORTED["gemma3_text"][1], layer_types=["sliding_attention", "full_attention"])
    transformers.Gemma3TextConfig(**gemma).save_pretrained(tmp_path / "mixed")
    dense, _ = load_target(f"hf:{tmp_path / 'mixed'}")
    assert param_counts(dense)["total"] > 0
    released = published_arch(f"hf:{tmp_path / 'mixed'}")  # the per-layer layout as ArchConfig's layout knobs
    assert released.global_every == 2 and [released.layer_attention(i).kind for i in range(2)] == ["local", "global"]


def test_search_config_takes_target_hf_path(tmp_path):
    """target=hf:PATH on the command line composes as conf/target/hf.yaml with hf_path (a Hydra group option)."""
    from nas.cost import Coster
    from nas.profiles import check_overrides, expand_hf_target

    name, fields = IMPORTED["llama"]
    getattr(transformers, name)(**fields).save_pretrained(tmp_path / "my model")
    args = expand_hf_target([f"target=hf:{tmp_path / 'my model'}", "seed=1"])
    assert args[0] == "target=hf" and args[-1] == "seed=1"
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from nas.profiles import conf_dir
    from nas.search import schema as search_config

    search_config.register()
    check_overrides("search", args)  # composes (exits 2 otherwise)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        target = OmegaConf.to_container(compose("search", overrides=args).target, resolve=True)
    coster = Coster(target, "h100_sxm")
    assert coster.target == f"hf:{tmp_path / 'my model'}"
    report = coster.estimate({"kv_heads": fields["num_key_value_heads"]})  # the dense baseline is MHA
    assert report.params["unique"] == hf_param_count(getattr(transformers, name)(**fields))
    assert report.workload.seq_len == fields["max_position_embeddings"]


def test_a_sparse_attn_point_at_the_readme_target_exports_its_costed_size(tmp_path):
    """The sparse_attn space's target (Llama 3.2 1B at 32k, 128256-token vocabulary) with a 4096-token window:
    a Mistral config whose transformers model has the parameter count nas.cost charges."""
    from nas.cost import Coster

    arch = Coster("llama3.2_1b_32k").target_arch({"attention": "local_global", "window": 4096, "global_tokens": 0})
    written = write_hf(arch, tmp_path / "hf")
    config = transformers.AutoConfig.from_pretrained(written.out)
    assert (config.model_type, config.vocab_size, config.sliding_window, config.num_key_value_heads,
            config.tie_word_embeddings) == ("mistral", 128256, 4096, 32, True)
    assert hf_param_count(config) == param_counts(arch)["unique"]
