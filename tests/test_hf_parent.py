"""A local Hugging Face checkpoint as the inherit-and-distill parent (proxy.parent / `parent=hf:DIR`).

Checkpoints are tiny random transformers models saved with save_pretrained, the tokenizer a small byte-level BPE
trained here on a slice of the stdlib source: nothing is downloaded. transformers' own model is the logits oracle.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.evaluation.data import TaskData, TaskSpec, stdlib_root
from nas.evaluation.proxy import ProxySpec, load_proxy, proxy_arch, train_proxy
from nas.model.hf import RMS_EPS, hf_parent_digest, load_hf_parent
from nas.profiles import expand_hf_target

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SEQ = 32
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8}),
}


def corpus_slice(folder: Path) -> Path:
    """About 120 kB of the stdlib source in one text file."""
    text = "".join((stdlib_root() / name).read_text() for name in ("textwrap.py", "bisect.py", "heapq.py", "shlex.py"))
    path = folder / "corpus.txt"
    path.write_text(text[:120_000])
    return path


def checkpoint(folder: Path, family: str, corpus: Path, seed: int = 0, tie: bool = False) -> Path:
    """A random tiny `family` model and a 300-token byte-level BPE tokenizer trained on `corpus`, in `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train([str(corpus)], trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                 show_progress=False))
    config_class, model_class, extra = FAMILIES[family]
    config = getattr(transformers, config_class)(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64, rms_norm_eps=RMS_EPS,
        tie_word_embeddings=tie, hidden_act="silu", bos_token_id=None, eos_token_id=None, pad_token_id=None,
        **extra)
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config)
    with torch.no_grad():  # norms away from 1, so that a norm loaded in the wrong place shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return corpus_slice(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("family, tie", [("llama", False), ("qwen3", True)])
def test_a_checkpoint_loads_with_transformers_logits(family, tie, corpus, tmp_path) -> None:
    folder = checkpoint(tmp_path / family, family, corpus, tie=tie)
    model, digest = load_hf_parent(f"hf:{folder}", SEQ)
    assert model.cfg.qk_norm == (family == "qwen3") and model.cfg.tie_embeddings == tie
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    idx = torch.randint(0, model.cfg.vocab_size, (2, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert ours.shape == theirs.shape and (ours - theirs).abs().max().item() < 1e-4
    assert digest == hf_parent_digest(f"hf:{folder}")


def test_the_digest_is_the_checkpoint_content(corpus, tmp_path) -> None:
    first = hf_parent_digest(f"hf:{checkpoint(tmp_path / 'a', 'llama', corpus, seed=0)}")
    assert hf_parent_digest(f"hf:{checkpoint(tmp_path / 'b', 'llama', corpus, seed=0)}") == first  # same content
    assert hf_parent_digest(f"hf:{checkpoint(tmp_path / 'a', 'llama', corpus, seed=1)}") != first  # new weights


def test_bad_parents_are_one_line(corpus, tmp_path) -> None:
    folder = checkpoint(tmp_path / "ok", "llama", corpus)
    base = dict(load_proxy("tiny").__dict__, seq_len=SEQ, evaluation="inherit")
    with pytest.raises(ValueError, match=r"^proxy.parent='x' is invalid: expected null or hf:DIR"):
        ProxySpec(**{**base, "parent": "x"})
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_bytes((folder / "config.json").read_bytes())
    with pytest.raises(ValueError, match=r"no model.safetensors in .*half \(a parent folder holds"):
        ProxySpec(**{**base, "parent": f"hf:{tmp_path / 'half'}"})
    with pytest.raises(ValueError, match=r"needs proxy.evaluation=inherit"):
        ProxySpec(**{**base, "parent": f"hf:{folder}", "evaluation": "scratch"})
    with pytest.raises(ValueError, match=r"proxy.seq_len=128 exceeds the checkpoint's max_position_embeddings=64"):
        ProxySpec(**{**base, "parent": f"hf:{folder}", "seq_len": 128})
    proxy = ProxySpec(**{**base, "parent": f"hf:{folder}"})
    assert proxy_arch({}, proxy).d_model == 32  # the checkpoint's sizes, not the proxy file's 64
    with pytest.raises(ValueError, match=r"fit proxy .tiny. with parent=hf:.*kv_heads=3 is invalid: must divide"):
        proxy_arch({"kv_heads": 3}, proxy)


def test_an_inherit_run_from_a_checkpoint_reads_its_tokens_and_reports_its_digest(corpus, tmp_path) -> None:
    folder = checkpoint(tmp_path / "ckpt", "llama", corpus)
    proxy = replace(load_proxy("tiny"), name="hf_micro", seq_len=SEQ, batch_size=4, warmup_steps=2,
                    budget_tokens=8 * 4 * SEQ, rungs=2, eval_batches=1, evaluation="inherit", distill_kl_weight=1.0,
                    parent=f"hf:{folder}")
    task = TaskSpec(kind="lm", corpus=str(corpus))
    data = TaskData(task, SEQ, cache_dir=tmp_path / "cache", tokenizer=folder / "tokenizer.json")
    ids = np.asarray(data.corpus.train)
    assert ids.max() < 300 and ids.max() >= 256 and len(ids) < 0.8 * corpus.stat().st_size  # merges, not bytes
    encoded = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")).encode(corpus.read_text()[:2000]).ids
    assert np.isin(encoded[:50], ids).all()
    models = []
    reports = list(train_proxy({"kv_heads": 2}, proxy, task, cache_dir=tmp_path / "cache", parent_dir=tmp_path / "p",
                               model_sink=models.append))
    digest = hf_parent_digest(f"hf:{folder}")
    assert [r.step for r in reports] == [4, 8] and all(r.parent == digest for r in reports)
    assert models[0].cfg.vocab_size == 300 and models[0].cfg.n_kv == 2
    assert not (tmp_path / "p").exists()  # nothing trained, nothing cached: the checkpoint is the parent


def test_a_search_runs_end_to_end_on_a_checkpoint_parent(corpus, tmp_path) -> None:
    import ray

    from nas.study.store import Store
    from tests.test_search import compose_cfg

    folder = checkpoint(tmp_path / "ckpt", "qwen3", corpus)
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    start = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        from nas.search import run_search

        overrides = expand_hf_target([
            "study=hfp", f"store.url={url}", "search_space=head_grouping", "task=lm", f"task.corpus={corpus}",
            "n_trials=2", "sampler=random", "ray.max_concurrent=1", "progress=false", "device=cpu",
            "++proxy.evaluation=inherit", f"proxy.seq_len={SEQ}", "proxy.batch_size=4", "proxy.warmup_steps=1",
            f"proxy.budget_tokens={4 * 4 * SEQ}", "proxy.rungs=2", "proxy.eval_batches=1",
            f"parent=hf:{folder}"])
        run_search(compose_cfg(*overrides), out=None)
    finally:
        ray.shutdown()
    trials = Store(url).trials("hfp")
    digest = hf_parent_digest(f"hf:{folder}")
    assert len(trials) == 2 and all(t.state == "COMPLETE" for t in trials)
    assert trials[0].params == {"kv_heads": None, "group_share": "kv"}  # the dense baseline first
    for t in trials:
        assert t.arch["vocab_size"] == 300 and t.arch["d_model"] == 32 and t.arch["qk_norm"]
        assert [r.metrics["parent"] for r in t.reports] == [digest] * len(t.reports)  # recorded per rung
    assert time.perf_counter() - start < 120


def test_a_knob_the_checkpoint_cannot_take_is_one_line_exit_2(corpus, tmp_path) -> None:
    import subprocess
    import sys

    folder = checkpoint(tmp_path / "ckpt", "llama", corpus)
    proc = subprocess.run([sys.executable, "-m", "nas.evaluation.proxy", "++proxy.evaluation=inherit",
                           f"parent=hf:{folder}", f"proxy.seq_len={SEQ}", "arch.kv_heads=3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert f"parent=hf:{folder} (ArchConfig.kv_heads=3 is invalid: must divide n_heads=4)" in proc.stderr
