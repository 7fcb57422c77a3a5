"""Small input checks shared by every config class: one message format for users."""

from __future__ import annotations

from typing import Any


def check_int(key: str, value: Any, low: int = 1) -> None:
    """Raise ValueError naming `key` unless `value` is an integer (not a bool) >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{key}={value!r} is invalid: expected an integer >= {low}")


def check_recipe(prefix: str, lr: Any, min_lr_ratio: Any, grad_clip: Any, weight_decay: Any) -> None:
    """The optimiser recipe a proxy and the trainer share (nas/evaluation/optim.py): ValueError naming `prefix`+key."""
    for key, value, ok, valid in (
            ("lr", lr, lambda v: v > 0, "a number > 0"),
            ("grad_clip", grad_clip, lambda v: v > 0, "a number > 0"),
            ("weight_decay", weight_decay, lambda v: v >= 0, "a number >= 0"),
            ("min_lr_ratio", min_lr_ratio, lambda v: 0 <= v <= 1, "a number in [0, 1]")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ValueError(f"{prefix}{key}={value!r} is invalid: expected {valid}")


def check_bool(key: str, value: Any) -> None:
    """Raise ValueError naming `key` unless `value` is true or false (not a string or a number)."""
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} is invalid: expected true or false")
