"""nas.train: export -> train -> checkpoint -> resume equals an uninterrupted run; accumulation; sizes; CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.export.command import export
from nas.model import ArchConfig, TransformerLM
from nas.study.store import Store
from nas.train import TrainSpec, loop, sized_arch, train
from nas.train.checkpoint import CheckpointError, checkpoints, load_checkpoint

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
    _interrupted_run(arch, tmp_path / "cut", corpus, monkeypatch, steps=6, last=4)  # the newest checkpoint: step 3
    assert [p.name for p in checkpoints(tmp_path / "cut")] == ["step_00000003.pt"]
    assert [s for s, _ in _train_losses(tmp_path / "cut")] == [1, 2, 3, 4]

    resumed = train(arch, _spec(tmp_path / "cut", corpus, resume=True))
    assert resumed.start_step == 3
    assert resumed.losses == {s: full.losses[s] for s in (4, 5, 6)}  # bitwise: same float values
    assert resumed.evals[6] == full.evals[6]
    assert _train_losses(tmp_path / "cut") == _train_losses(tmp_path / "full")  # the log has no duplicate steps
    assert resumed.precision_switch_step == full.precision_switch_step


def _interrupted_run(arch: ArchConfig, out_dir: Path, corpus: Path, monkeypatch, steps: int, last: int) -> None:
    """A run of `steps` steps killed during step last+1 (checkpoints every 3 steps)."""
    real_step = loop._Run.train_step

    def crash(self):
        if self.step == last:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(loop._Run, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train(arch, _spec(out_dir, corpus, steps=steps))
    monkeypatch.setattr(loop._Run, "train_step", real_step)


class _RunsCode:
    """Pickles as a call to os.mkdir: what a crafted checkpoint would run if loaded with weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _damage(path: Path, how: str, marker: Path) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # bytes of a tensor's payload: only the archive's CRC-32 shows it
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16]) + data[middle + 16:])
    else:
        torch.save({"arch": {}, "model": _RunsCode(marker), "optimizer": {}, "rng": {}, "step": 6}, path)


@pytest.mark.parametrize("how", ["truncated", "flipped", "crafted"])
def test_resume_falls_back_past_an_unreadable_newest_checkpoint(tmp_path, corpus, exported, monkeypatch, capsys, how):
    arch = ArchConfig.from_yaml(exported)
    full = train(arch, _spec(tmp_path / "full", corpus, steps=9))
    _interrupted_run(arch, tmp_path / "cut", corpus, monkeypatch, steps=9, last=7)  # checkpoints at steps 3 and 6
    newest = checkpoints(tmp_path / "cut")[-1]
    assert newest.name == "step_00000006.pt"
    marker = tmp_path / "code-ran"
    _damage(newest, how, marker)
    capsys.readouterr()
    resumed = train(arch, _spec(tmp_path / "cut", corpus, steps=9, resume=True))
    assert not marker.exists()  # the crafted pickle was refused, not run
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("resume:")]
    assert len(said) == 1 and str(newest) in said[0] and said[0].endswith(
        "resuming from the newest intact checkpoint, step_00000003.pt")
    assert resumed.start_step == 3
    assert resumed.losses == {s: full.losses[s] for s in range(4, 10)}  # as if never interrupted
    assert _train_losses(tmp_path / "cut") == _train_losses(tmp_path / "full")
    assert [p.name for p in checkpoints(tmp_path / "cut")] == [p.name for p in checkpoints(tmp_path / "full")]
    for path in checkpoints(tmp_path / "cut"):  # the damaged one is replaced; every one loads safely
        assert load_checkpoint(path)["step"] == int(path.stem.split("_")[1])


def test_resume_with_no_intact_checkpoint_is_one_line_and_changes_nothing(tmp_path, corpus, exported, monkeypatch):
    arch = ArchConfig.from_yaml(exported)
    out_dir = tmp_path / "cut"
    _interrupted_run(arch, out_dir, corpus, monkeypatch, steps=9, last=7)
    for path in checkpoints(out_dir):
        _damage(path, "truncated", tmp_path / "unused")
    before = {p: p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    with pytest.raises(ValueError) as err:
        train(arch, _spec(out_dir, corpus, steps=9, resume=True))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"resume=true but no checkpoint in {out_dir / 'checkpoints'} "
                                                       "is intact (2 tried; newest: ")
    assert message.endswith("drop resume=true to start a new run")
    assert {p: p.read_bytes() for p in out_dir.rglob("*") if p.is_file()} == before
    with pytest.raises(CheckpointError, match="step_00000003.pt is unreadable"):  # a named file: no fallback
        train(arch, _spec(out_dir, corpus, steps=9, resume=str(out_dir / "checkpoints" / "step_00000003.pt")))


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
