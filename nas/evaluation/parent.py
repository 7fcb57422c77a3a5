"""The inherit-and-distill evaluation: one dense parent per (proxy, task, seed), cached, converted per trial.

The parent is trained once with the proxy's recipe on proxy.parent_budget_tokens and kept content-addressed in
trials_db/parents/<digest>.pt, the digest a sha256 of everything that determines it (its architecture, recipe,
task and corpus content, seed and PARENT_FORMAT). A process that finds it missing takes an exclusive lock on
<digest>.lock, trains it and writes it atomically (a temporary file renamed into place), so trials that race
train it once and never read half a file. Each trial converts it to its knobs (nas.evaluation.inherit) and trains for
the proxy's budget on the task loss plus KL to the parent's logits; its rung reports carry the parent's digest.
With proxy.parent=hf:DIR the parent is that local transformers checkpoint instead (nas.model.hf.load_hf_parent),
nothing is trained or cached, and the digest is the checkpoint's content.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nas.evaluation.data import TaskData, TaskSpec
from nas.evaluation.inherit import convert, parent_arch
from nas.evaluation.scoring import RungReport
from nas.model import ArchConfig, TransformerLM
from nas.profiles import REPO_ROOT

if TYPE_CHECKING:
    from nas.evaluation.proxy import ProxySpec

PARENT_FORMAT = 1  # bump when a change to the code makes an old parent different from what it would train now


def default_parent_dir() -> Path:
    """Where parents are cached: trials_db/parents beside the store."""
    return REPO_ROOT / "trials_db" / "parents"


def parent_recipe(proxy: ProxySpec) -> ProxySpec:
    """The proxy spec the parent trains with: the proxy's recipe, its parent budget, lr and warm-up, one rung."""
    return replace(proxy, evaluation="scratch", budget_tokens=proxy.parent_budget_tokens,
                   lr=proxy.parent_lr or proxy.lr, warmup_steps=proxy.parent_warmup_steps, rungs=1, min_context=None)


def parent_digest(cfg: ArchConfig, proxy: ProxySpec, task: TaskSpec, data: TaskData, seed: int) -> str:
    """sha256 of what determines the parent: architecture, recipe, task (and corpus content), seed, code format."""
    recipe = parent_recipe(proxy)
    fields = ("seq_len", "batch_size", "lr", "weight_decay", "warmup_steps", "min_lr_ratio", "grad_clip",
              "budget_tokens")
    task_dict = {k: v for k, v in task.to_dict().items() if k != "name"}
    payload = {"format": PARENT_FORMAT, "arch": parent_arch(cfg).to_dict(),
               "recipe": {k: getattr(recipe, k) for k in fields}, "task": task_dict,
               "corpus": data.corpus.key if data.corpus is not None else None, "seed": seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _train_parent(cfg: ArchConfig, proxy: ProxySpec, data: dict[int, TaskData], seed: int, threads: int,
                  device: torch.device, progress: bool) -> tuple[TransformerLM, dict]:
    """Train the dense parent; the model and its final report."""
    from nas.evaluation.proxy import _run

    recipe = parent_recipe(proxy)
    models: list[TransformerLM] = []
    steps = recipe.budget_tokens // recipe.tokens_per_step
    reports = list(_run(parent_arch(cfg), recipe, {recipe.seq_len: data[proxy.seq_len]}, steps, seed, threads,
                        device, progress, models.append))
    return models[0], reports[-1].to_dict()


def load_parent(cfg: ArchConfig, proxy: ProxySpec, task: TaskSpec, data: dict[int, TaskData], seed: int,
                threads: int, device: torch.device, progress: bool = False, parent_dir: str | Path | None = None
                ) -> tuple[TransformerLM, str]:
    """The cached dense parent of `cfg`'s sizes for (proxy, task, seed), trained first if missing, or the local
    checkpoint proxy.parent names (nas.model.hf); (model, digest)."""
    if proxy.parent is not None:
        from nas.model.hf import load_hf_parent

        model, digest = load_hf_parent(proxy.parent, proxy.seq_len)
        return model.to(device).eval(), digest
    digest = parent_digest(cfg, proxy, task, data[proxy.seq_len], seed)
    folder = Path(parent_dir) if parent_dir is not None else default_parent_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.pt"
    if not path.exists():
        with open(folder / f"{digest}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process trains; the others wait here, then find the file
            if not path.exists():
                start = time.perf_counter()
                model, report = _train_parent(cfg, proxy, data, seed, threads, device, progress)
                entry = {"state_dict": model.state_dict(), "arch": model.cfg.to_dict(), "digest": digest,
                         "final_report": json.dumps(report), "wall_s": time.perf_counter() - start}
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{digest}.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as f:
                        torch.save(entry, f)
                    os.replace(tmp, path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
    entry = torch.load(path, map_location=device, weights_only=True)
    parent = TransformerLM(ArchConfig.from_dict(entry["arch"])).to(device)
    parent.load_state_dict(entry["state_dict"])
    return parent.eval(), digest


def inherit_run(cfg: ArchConfig, proxy: ProxySpec, task: TaskSpec, data: dict[int, TaskData],
                total_steps: int, seed: int, threads: int, device: torch.device, progress: bool,
                model_sink: Callable[[TransformerLM], None] | None, parent_dir: str | Path | None
                ) -> Iterator[RungReport]:
    """A trial's rung reports under inherit-and-distill: the parent converted to `cfg`, trained as the proxy says."""
    from nas.evaluation.proxy import _run

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        parent, digest = load_parent(cfg, proxy, task, data, seed, threads, device, progress, parent_dir)
    finally:
        torch.set_num_threads(previous)
    for p in parent.parameters():
        p.requires_grad_(False)

    def start() -> TransformerLM:
        calibration = data[proxy.seq_len].batch(proxy.batch_size, torch.Generator().manual_seed(seed)).x.to(device)
        return convert(parent, cfg, calibration, proxy.gate_init).train()

    return _run(cfg, proxy, data, total_steps, seed, threads, device, progress, model_sink, start, parent, digest)
