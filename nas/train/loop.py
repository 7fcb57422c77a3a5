"""The main training loop: gradient accumulation, periodic evaluation, checkpoints and exact resume."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.device import resolve_device
from nas.evaluation.data import Batch, TaskData, load_task
from nas.evaluation.optim import lr_at, seeded_start, set_lr
from nas.evaluation.scoring import NonFiniteLoss, batch_to, evaluate, train_loss
from nas.model import ArchConfig, TransformerLM
from nas.model.precision import AdaptivePrecision
from nas.train.checkpoint import checkpoints, restore_rng_states, resume_state, rng_states, save_checkpoint
from nas.train.spec import TrainSpec

METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainResult:
    """What a training invocation did: the losses of the steps it ran, its evaluations, its last checkpoint."""

    arch: ArchConfig
    out_dir: Path
    start_step: int  # 0 for a fresh run, the checkpoint's step when resumed
    losses: dict[int, float] = field(default_factory=dict)  # optimizer step -> mean training loss
    evals: dict[int, dict[str, float]] = field(default_factory=dict)
    checkpoint: Path | None = None
    precision_switch_step: int | None = None


def _task_data(spec: TrainSpec, seq_len: int) -> TaskData:
    task = load_task(spec.task)
    if spec.corpus is not None:
        task = dataclasses.replace(task, corpus=spec.corpus)
    return TaskData(task, seq_len)


def _adaptive_state(adaptive: AdaptivePrecision | None) -> dict[str, Any] | None:
    if adaptive is None:
        return None
    return adaptive.state_dict()


def _restore_adaptive(adaptive: AdaptivePrecision | None, state: dict[str, Any] | None, model: TransformerLM) -> None:
    if adaptive is None or state is None:
        return
    adaptive.load_state_dict(state)
    if adaptive.switched:
        model.set_ffn_format(adaptive.target_format)


class MetricsLog:
    """Metrics as JSON lines in out_dir/metrics.jsonl and one text line each on stdout."""

    def __init__(self, out_dir: Path, resumed_step: int | None) -> None:
        self.path = out_dir / METRICS_FILE
        if resumed_step is not None and self.path.exists():  # drop what ran after the checkpoint
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resumed_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resumed_step is None:
            self.path.write_text("")

    def write(self, record: dict[str, Any], echo: Callable[[str], None]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        text = " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
        echo(text)


def _check_fresh_dir(out_dir: Path) -> None:
    if checkpoints(out_dir):
        raise ValueError(f"out_dir={str(out_dir)!r} already holds a run's checkpoints: pass resume=true to "
                         "continue it, or choose another out_dir")


def _check_same_arch(saved: dict[str, Any], arch: ArchConfig, path: Path) -> None:
    current = arch.to_dict()
    if saved != current:
        key = next(k for k in current if saved.get(k) != current[k])
        raise ValueError(f"resume: {path} was trained with {key}={saved.get(key)!r}, not {current[key]!r}: "
                         "resume with the same model and sizes")


class _Run:
    """The state of one training run (model, optimizer, scaler, samplers) and its step."""

    def __init__(self, arch: ArchConfig, spec: TrainSpec, device: torch.device, data: TaskData) -> None:
        self.arch, self.spec, self.device, self.data = arch, spec, device, data
        self.model, self.optimizer, self.gen = seeded_start(arch, spec.seed, device, spec.lr, spec.weight_decay)
        uses_fp16 = "fp16" in (arch.precision.attention, arch.precision.ffn, arch.precision.embed)
        self.scaler = torch.amp.GradScaler(device.type, enabled=uses_fp16 and device.type == "cuda")
        self.adaptive = AdaptivePrecision.from_config(arch.precision) if arch.precision.ffn == "adaptive" else None
        self.step = 0

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint needs to continue exactly."""
        return {"arch": self.arch.to_dict(), "spec": dataclasses.asdict(self.spec),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_states(self.gen),
                "adaptive": _adaptive_state(self.adaptive)}

    def load(self, path: Path, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by `state` (read from `path`)."""
        _check_same_arch(state["arch"], self.arch, path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_states(state["rng"], self.gen)
        _restore_adaptive(self.adaptive, state["adaptive"], self.model)
        self.step = state["step"]

    def train_step(self) -> tuple[float, float, float]:
        """One optimizer step over batch_size sequences in micro-batches: (loss, lr, grad norm)."""
        spec, n = self.spec, self.spec.accumulation
        self.step += 1
        lr = lr_at(self.step, spec.lr, spec.warmup, spec.steps, spec.min_lr_ratio)
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for _ in range(n):
            batch = self.data.batch(spec.micro_batch, self.gen)
            batch = batch_to(batch, self.device)
            logits = self.model(batch.x)
            micro_loss = train_loss(logits, batch)
            self.scaler.scale(micro_loss / n).backward()
            loss += micro_loss.item() / n
        if not math.isfinite(loss):
            raise NonFiniteLoss(self.step, loss)
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, lr, grad_norm


def train(arch: ArchConfig, spec: TrainSpec) -> TrainResult:
    """Train `arch` with the recipe in `spec`, resuming from a checkpoint when spec.resume asks for it."""
    from tqdm import tqdm

    out_dir = Path(spec.out_dir)
    device = resolve_device(spec.device)
    resumed = resume_state(spec.resume, out_dir)
    ckpt_path = None if resumed is None else resumed[0]
    if resumed is None:
        _check_fresh_dir(out_dir)
    data = _task_data(spec, arch.seq_len)
    if data.task.uses_mqar and data.task.mqar.vocab > arch.vocab_size:
        raise ValueError(f"task.mqar.vocab={data.task.mqar.vocab} exceeds the model's vocab_size={arch.vocab_size}")
    previous_threads = torch.get_num_threads()
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    try:
        run = _Run(arch, spec, device, data)
        if resumed is not None:
            run.load(*resumed)
            if run.step >= spec.steps:
                raise ValueError(f"resume: {ckpt_path} is at step {run.step}, already steps={spec.steps}: "
                                 "raise steps to train further")
        out_dir.mkdir(parents=True, exist_ok=True)
        arch.to_yaml(out_dir / "arch.yaml")
        result = TrainResult(arch, out_dir, run.step)
        log = MetricsLog(out_dir, run.step if ckpt_path is not None else None)
        val_set = data.val_set(spec.eval_batches, spec.micro_batch)
        bar = tqdm(total=spec.steps, initial=run.step, disable=not spec.progress, desc="train", file=sys.stderr)
        echo = lambda text: tqdm.write(text, file=sys.stdout)  # noqa: E731  keeps the bar intact
        try:
            _loop(run, val_set, result, log, bar, echo)
        finally:
            bar.close()
        result.precision_switch_step = run.adaptive.switch_step if run.adaptive is not None else None
        return result
    finally:
        torch.set_num_threads(previous_threads)


def _loop(run: _Run, val_set: list[Batch], result: TrainResult, log: MetricsLog, bar: Any,
          echo: Callable[[str], None]) -> None:
    spec = run.spec
    tokens_per_step = spec.batch_size * run.data.seq_len
    start, t0 = run.step, time.perf_counter()
    while run.step < spec.steps:
        loss, lr, grad_norm = run.train_step()
        step = run.step
        result.losses[step] = loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if run.adaptive is not None and run.adaptive.observe(step, loss):
            run.model.set_ffn_format(run.adaptive.target_format)
            log.write({"step": step, "kind": "precision_switch", "ffn_format": run.adaptive.target_format}, echo)
        if step % spec.log_every == 0 or step == spec.steps:
            rate = (step - start) * tokens_per_step / max(time.perf_counter() - t0, 1e-9)
            log.write({"step": step, "kind": "train", "loss": loss, "lr": lr, "grad_norm": grad_norm,
                       "tokens": step * tokens_per_step, "tokens_per_s": rate}, echo)
        if step % spec.eval_every == 0 or step == spec.steps:
            metrics = evaluate(run.model, val_set, run.device)
            metrics["val_loss"] = metrics.get("lm_loss", 0.0) + metrics.get("mqar_loss", 0.0)
            result.evals[step] = metrics
            log.write({"step": step, "kind": "eval", **metrics}, echo)
        if step % spec.ckpt_every == 0 or step == spec.steps:
            result.checkpoint = save_checkpoint(result.out_dir, step, run.state(), spec.keep_checkpoints)
