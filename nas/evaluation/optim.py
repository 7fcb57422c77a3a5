"""The training recipe shared by the proxy and the main trainer: AdamW and a warmup + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


def seeded_start(arch: Any, seed: int, device: Any, lr: float, weight_decay: float,
                 build: Callable[[], torch.nn.Module] | None = None) -> tuple[Any, torch.optim.AdamW, torch.Generator]:
    """A run's start from its seed: (model of `arch` on `device`, or what `build` returns (a model converted from a
    parent), its optimizer, the data-order generator)."""
    from nas.model.transformer import TransformerLM

    torch.manual_seed(seed)
    model = TransformerLM(arch).to(device) if build is None else build()
    return model, make_optimizer(model, lr, weight_decay), torch.Generator().manual_seed(seed)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.95) with weight decay on matrices only (not norms, biases)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def lr_at(step: int, max_lr: float, warmup: int, total: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup to max_lr, then cosine decay to max_lr * min_lr_ratio at `total` (step is 1-based).

    The warmup is capped at half the run.
    """
    warmup = min(warmup, total // 2)
    if step <= warmup:
        return max_lr * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return max_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr
