"""TrainSpec (the recipe of conf/train.yaml) and the architecture it trains (an exported model at some size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nas.checks import check_int, check_recipe
from nas.cost.target import apply_knobs, load_target
from nas.knobs import SIZE_FIELDS
from nas.model.config import ArchConfig
from nas.profiles import strict_from_dict

OVERRIDABLE_SIZES = ("n_layers", "d_model", "n_heads", "seq_len")


@dataclass
class TrainSpec:
    """How the main trainer runs: steps, batch and micro-batch, recipe, evaluation, checkpoints, device."""

    steps: int = 1000
    batch_size: int = 16  # sequences per optimizer step
    micro_batch: int = 16  # sequences per forward/backward; batch_size / micro_batch = accumulation steps
    lr: float = 6e-4
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    task: str = "lm"  # conf/task/<name>.yaml
    corpus: str | None = None  # overrides the task's corpus (a text file or folder)
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    ckpt_every: int = 200
    keep_checkpoints: int = 2  # newest checkpoints kept in out_dir/checkpoints
    resume: bool | str = False  # true: the newest checkpoint in out_dir; a path: that checkpoint
    out_dir: str = "outputs/train/run"
    device: str = "auto"
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; null keeps PyTorch's default
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "micro_batch", "log_every", "eval_every", "eval_batches", "ckpt_every",
                    "keep_checkpoints"):
            check_int(key, getattr(self, key))
        for key in ("warmup", "seed"):
            check_int(key, getattr(self, key), low=0)
        if self.threads is not None:
            check_int("threads", self.threads)
        if self.batch_size % self.micro_batch:
            raise ValueError(f"micro_batch={self.micro_batch} is invalid: it must divide "
                             f"batch_size={self.batch_size}")
        check_recipe("", self.lr, self.min_lr_ratio, self.grad_clip, self.weight_decay)
        if not isinstance(self.resume, (bool, str)):
            raise ValueError(f"resume={self.resume!r} is invalid: expected true, false or a checkpoint path")
        if self.device != "auto" and not self.device.startswith(("cpu", "cuda")):
            raise ValueError(f"device={self.device!r} is invalid: expected auto, cpu, cuda or cuda:N")

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step."""
        return self.batch_size // self.micro_batch

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainSpec":
        """Build from a plain dict; unknown keys raise ValueError naming them."""
        return strict_from_dict(cls, data, "")


def sized_arch(model: ArchConfig | dict[str, Any], size: dict[str, Any] | None = None,
               target: str | None = None) -> ArchConfig:
    """The model's knobs at the sizes of a named target (or the model's own), with `size` overrides (null: keep)."""
    arch = model if isinstance(model, ArchConfig) else ArchConfig.from_dict(model)
    overrides = {k: v for k, v in (size or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(OVERRIDABLE_SIZES))
    if unknown:
        raise ValueError(f"size.{unknown[0]} is not a size: valid are {', '.join(OVERRIDABLE_SIZES)}")
    if target is None and not overrides:
        return arch
    base = load_target(target)[0] if target is not None else arch
    dense = ArchConfig.from_dict({**{k: getattr(base, k) for k in SIZE_FIELDS}, **overrides})
    return apply_knobs(dense, arch)
