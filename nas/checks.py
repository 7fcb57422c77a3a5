"""Small input checks shared by every config class: one message format for users."""

from __future__ import annotations

from typing import Any


def check_int(key: str, value: Any, low: int = 1) -> None:
    """Raise ValueError naming `key` unless `value` is an integer (not a bool) >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{key}={value!r} is invalid: expected an integer >= {low}")


def check_bool(key: str, value: Any) -> None:
    """Raise ValueError naming `key` unless `value` is true or false (not a string or a number)."""
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} is invalid: expected true or false")
