"""The objectives of a study: quality from the proxy, then one or more compute ratios from nas.cost, all minimised."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

QUALITY = "quality"
COMPUTE_KEYS = ("flops_ratio", "time_ratio", "memory_ratio", "unique_params_ratio",  # CostReport ratios to dense
                "kv_cache_ratio", "prefill_time_ratio", "decode_time_ratio")  # training, then inference
DEFAULT_COMPUTE = ("flops_ratio",)  # a space file or a stored study that names none


def check_compute(value: Any, where: str) -> tuple[str, ...]:
    """One compute key or a list of distinct ones, as a tuple; ValueError naming `where`, the value and valid keys."""
    keys = [value] if isinstance(value, str) else value
    valid = f"expected one of {', '.join(COMPUTE_KEYS)}, or a list of them"
    if not isinstance(keys, (list, tuple)) or not keys:
        raise ValueError(f"{where}={value!r} is invalid: {valid}")
    for key in keys:
        if key not in COMPUTE_KEYS:
            raise ValueError(f"{where}={value!r} is invalid: {key!r} is not a compute objective; {valid}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"{where}={value!r} is invalid: a compute objective is listed twice")
    return tuple(keys)


def stored_compute_keys(config: Mapping[str, Any], objectives: Iterable[Mapping[str, Any] | None] = ()) \
        -> tuple[str, ...]:
    """The compute objectives of a stored study, primary first.

    Its config's `objectives.compute` (a list; one name in studies from before k objectives), else the
    non-quality keys of its trials' objectives (first seen first), else flops_ratio.
    """
    named = ((config or {}).get("objectives") or {}).get("compute")
    if isinstance(named, str):
        return (named,)
    if isinstance(named, (list, tuple)) and named:
        return tuple(str(k) for k in named)
    seen = dict.fromkeys(k for obj in objectives if obj for k in obj if k != QUALITY)
    return tuple(seen) or DEFAULT_COMPUTE


def names(compute_keys: Iterable[str]) -> list[str]:
    """The study's metric names in Optuna's order: quality, then the compute objectives."""
    return [QUALITY, *compute_keys]


def values_dict(compute_keys: Iterable[str], compute: Iterable[float], quality: float | None = None) \
        -> dict[str, float]:
    """Objective name -> value as the store keeps a trial's objectives (quality first, when known)."""
    out = {QUALITY: quality} if quality is not None else {}
    return {**out, **dict(zip(compute_keys, compute))}
