"""Workload: how a model is run (sequences per step, sequence length, tokens over the whole training; serving)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nas.checks import check_int

INFERENCE_KEYS = ("batch", "context")


@dataclass(frozen=True)
class Serving:
    """Inference: `batch` sequences served together, each with `context` tokens (prefilled, then cached)."""

    batch: int
    context: int


@dataclass(frozen=True)
class Workload:
    """One optimizer step processes `batch` sequences of `seq_len` tokens; training sees `train_tokens`.

    `inference` (optional, a target's `workload.inference`): {batch, context} of serving; defaults to
    batch 1 at `seq_len`.
    """

    batch: int
    seq_len: int
    train_tokens: int
    inference: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        for key in ("batch", "seq_len", "train_tokens"):
            check_int(f"Workload.{key}", getattr(self, key))
        if self.inference is None:
            return
        if not isinstance(self.inference, Mapping) or set(self.inference) - set(INFERENCE_KEYS):
            raise ValueError(f"Workload.inference={self.inference!r} is invalid: expected a mapping with keys "
                             f"{', '.join(INFERENCE_KEYS)} (each optional)")
        for key in INFERENCE_KEYS:
            if key in self.inference:
                check_int(f"Workload.inference.{key}", self.inference[key])
        object.__setattr__(self, "inference", dict(self.inference))  # a plain dict, whatever mapping came in

    @property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step."""
        return self.batch * self.seq_len

    @property
    def steps(self) -> float:
        """Optimizer steps over the whole training (fractional: train_tokens / tokens_per_step)."""
        return self.train_tokens / self.tokens_per_step

    @property
    def serving(self) -> Serving:
        """The inference batch and context (batch 1 at seq_len unless `inference` says otherwise)."""
        given = dict(self.inference or {})
        return Serving(batch=int(given.get("batch", 1)), context=int(given.get("context", self.seq_len)))
