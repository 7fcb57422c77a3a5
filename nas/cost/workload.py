"""Workload: how a model is run (sequences per step, sequence length, tokens over the whole training)."""

from __future__ import annotations

from dataclasses import dataclass

from nas.checks import check_int


@dataclass(frozen=True)
class Workload:
    """One optimizer step processes `batch` sequences of `seq_len` tokens; training sees `train_tokens`."""

    batch: int
    seq_len: int
    train_tokens: int

    def __post_init__(self) -> None:
        for key in ("batch", "seq_len", "train_tokens"):
            check_int(f"Workload.{key}", getattr(self, key))

    @property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step."""
        return self.batch * self.seq_len

    @property
    def steps(self) -> float:
        """Optimizer steps over the whole training (fractional: train_tokens / tokens_per_step)."""
        return self.train_tokens / self.tokens_per_step
