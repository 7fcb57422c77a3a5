"""nas.train: export -> train -> checkpoint -> resume equals an uninterrupted run; accumulation; sizes; CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.export.cli import export
from nas.model import ArchConfig, TransformerLM
from nas.store import Store
from nas.train import TrainSpec, sized_arch, train
from nas.trainer import loop
from nas.trainer.checkpoint import checkpoints

REPO = Path(__file__).resolve().parents[1]
ARCH = dict(seq_len=32, n_layers=2, d_model=16, n_heads=4, ffn_mult=2.0, attention="local_global", window=8,
            global_tokens=2, kv_heads=2, sharing="cycle_rev", unique_layers=1,
            precision={"ffn": "adaptive", "adaptive_window": 1, "adaptive_threshold": 0.5})


@pytest.fixture()
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "corpus.txt"
    path.write_bytes((REPO / "nas" / "model" / "transformer.py").read_bytes())
    return path


@pytest.fixture()
def exported(tmp_path: Path, corpus: Path) -> Path:
    """conf/model-style file exported from a one-trial study seeded through the store API."""
    from nas.export.front import Policy

    store = Store(f"sqlite:///{tmp_path / 'nas.db'}")
    store.create_study("s", {"objectives": {"compute": "flops_ratio"}}, {"name": "t", "baseline": {}}, "0" * 64)
    arch = ArchConfig.from_dict(ARCH).to_dict()
    store.start_trial("s", 0, {"window": 8}, arch, target_arch=arch)
    store.finish_trial("s", 0, "COMPLETE", objectives={"quality": 2.0, "flops_ratio": 0.5})
    done = export(store, "s", Policy("knee"), name="tiny", model_dir=tmp_path / "conf" / "model")
    store.close()
    return done.path


def _spec(out_dir: Path, corpus: Path, **changes) -> TrainSpec:
    base = dict(steps=6, batch_size=4, micro_batch=2, lr=3e-3, warmup=2, corpus=str(corpus), log_every=1,
                eval_every=3, eval_batches=1, ckpt_every=3, keep_checkpoints=5, out_dir=str(out_dir), device="cpu",
                seed=0, threads=1, progress=False)
    return TrainSpec.from_dict({**base, **changes})


def _train_losses(out_dir: Path) -> list[tuple[int, float]]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if r["kind"] == "train"]


def test_resume_after_interruption_gives_the_uninterrupted_losses(tmp_path, corpus, exported, monkeypatch):
    arch = ArchConfig.from_yaml(exported)
    full = train(arch, _spec(tmp_path / "full", corpus))
    assert sorted(full.losses) == [1, 2, 3, 4, 5, 6]
    assert full.precision_switch_step is not None  # the adaptive state is part of what must resume

    real_step = loop._Run.train_step

    def crash_at_5(self):  # a run killed during step 5: the checkpoint of step 3 is the newest
        if self.step == 4:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(loop._Run, "train_step", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        train(arch, _spec(tmp_path / "cut", corpus))
    monkeypatch.setattr(loop._Run, "train_step", real_step)
    assert [p.name for p in checkpoints(tmp_path / "cut")] == ["step_00000003.pt"]
    assert [s for s, _ in _train_losses(tmp_path / "cut")] == [1, 2, 3, 4]

    resumed = train(arch, _spec(tmp_path / "cut", corpus, resume=True))
    assert resumed.start_step == 3
    assert resumed.losses == {s: full.losses[s] for s in (4, 5, 6)}  # bitwise: same float values
    assert resumed.evals[6] == full.evals[6]
    assert _train_losses(tmp_path / "cut") == _train_losses(tmp_path / "full")  # the log has no duplicate steps
    assert resumed.precision_switch_step == full.precision_switch_step


def test_fresh_run_into_a_used_dir_is_refused(tmp_path, corpus, exported):
    arch = ArchConfig.from_yaml(exported)
    train(arch, _spec(tmp_path / "run", corpus, steps=1))
    with pytest.raises(ValueError, match="already holds a run's checkpoints: pass resume=true"):
        train(arch, _spec(tmp_path / "run", corpus, steps=1))
    with pytest.raises(ValueError, match=r"step_00000001.pt is at step 1, already steps=1: raise steps"):
        train(arch, _spec(tmp_path / "run", corpus, steps=1, resume=True))
    with pytest.raises(ValueError, match="was trained with n_layers=2, not 1"):
        train(arch.replace(n_layers=1, unique_layers=1), _spec(tmp_path / "run", corpus, steps=2, resume=True))


def test_gradient_accumulation_equals_the_full_batch_step(tmp_path, corpus):
    arch = ArchConfig.from_dict({**ARCH, "precision": {}})
    runs = {}
    for micro in (1, 4):
        runs[micro] = loop._Run(arch, _spec(tmp_path / str(micro), corpus, micro_batch=micro), torch.device("cpu"),
                                loop._task_data(_spec(tmp_path, corpus), arch.seq_len))
    # oracle: one plain full-batch step on the same 4 sequences, same init
    gen = torch.Generator().manual_seed(0)
    batch = runs[1].data.batch(1, gen)
    rows = [batch] + [runs[1].data.batch(1, gen) for _ in range(3)]
    x, y = torch.cat([b.x for b in rows]), torch.cat([b.y for b in rows])
    torch.manual_seed(0)
    ref = TransformerLM(arch)
    ref_loss = torch.nn.functional.cross_entropy(ref(x).flatten(0, 1), y.flatten())
    loss_1, _, _ = runs[1].train_step()
    loss_4, _, _ = runs[4].train_step()
    assert loss_1 == pytest.approx(ref_loss.item(), rel=1e-5)
    assert loss_4 == pytest.approx(ref_loss.item(), rel=1e-5)
    # what accumulation guarantees is the summed gradient, before the optimizer (Adam's first step divides by
    # sqrt(v) + eps, so it turns summation-order noise in near-zero gradients into whole-step differences):
    # fp32 sums of a few hundred terms in another order agree to ~1e-5 of the tensor's largest entry
    for (name, p1), p4 in zip(runs[1].model.named_parameters(), runs[4].model.parameters()):
        scale = float(p4.grad.abs().max())
        torch.testing.assert_close(p1.grad, p4.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_sizes_from_a_target_and_overrides(exported):
    arch = ArchConfig.from_yaml(exported)
    big = sized_arch(arch, target="gpt_125m")
    assert (big.n_layers, big.d_model, big.n_heads, big.seq_len) == (12, 768, 12, 1024)
    assert big.kv_heads == 6 and big.unique_layers == 6  # half the heads, half the layers: as in the export
    # a window keeps its share of the context: 8 of 32 positions -> 256 of 1024
    assert (big.attention, big.window, big.sharing) == ("local_global", 8 * 1024 // 32, "cycle_rev")
    wide = sized_arch(arch, {"d_model": 32, "n_layers": None})
    assert (wide.d_model, wide.n_layers, wide.kv_heads) == (32, 2, 2)
    assert sized_arch(arch, {"n_layers": None}) == arch
    with pytest.raises(ValueError, match="size.vocab_size is not a size: valid are n_layers, d_model"):
        sized_arch(arch, {"vocab_size": 512})


def test_bad_recipe_values_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^micro_batch=3 is invalid: it must divide batch_size=4$"):
        TrainSpec(batch_size=4, micro_batch=3)
    with pytest.raises(ValueError, match=r"^stepz is not a known key: valid keys are"):
        TrainSpec.from_dict({"stepz": 3})


def test_cli_trains_an_exported_model(tmp_path, corpus, exported):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "nas.train", "model=tiny", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
           "steps=2", "batch_size=2", "micro_batch=1", "eval_every=2", "eval_batches=1", f"corpus={corpus}",
           f"out_dir={out}", "threads=1", "device=cpu"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert run.returncode == 0, run.stderr
    assert "step=2 kind=eval" in run.stdout and f"out_dir={out}" in run.stdout
    assert [s for s, _ in _train_losses(out)] == [2]
    assert ArchConfig.from_yaml(out / "arch.yaml") == ArchConfig.from_yaml(exported)
