"""Target scale (conf/target/*.yaml): the full-size model a proxy stands for, and a trial's knobs on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.profiles import read_profile
from nas.cost.workload import Workload
from nas.model.config import ArchConfig

SIZE_FIELDS = ("vocab_size", "seq_len", "n_layers", "d_model", "n_heads", "head_dim", "ffn_mult", "tie_embeddings")
KNOB_FIELDS = ("attention", "backend", "window", "global_tokens", "block_size", "gate", "gate_threshold",
               "kv_heads", "group_share", "sharing", "unique_layers", "sharing_scope", "ffn_blocks", "precision")
_FRACTIONAL_SHARING = ("sequence", "cycle", "cycle_rev")  # patterns whose unique-layer count M is a free knob


def load_target(name: str) -> tuple[ArchConfig, Workload]:
    """The target's dense architecture (every knob at its default) and its training workload."""
    path, data = read_profile("target", name)
    arch, work = data.get("arch"), data.get("workload")
    if not isinstance(arch, dict) or not isinstance(work, dict):
        raise ValueError(f"{path}: expected mappings `arch` (ArchConfig sizes) and `workload` (batch, seq_len, "
                         "train_tokens)")
    knobs = sorted(set(arch) - set(SIZE_FIELDS))
    if knobs:
        raise ValueError(f"{path}: arch.{knobs[0]} is not a size field: a target is dense; valid are "
                         f"{', '.join(SIZE_FIELDS)}")
    try:
        return ArchConfig.from_dict(arch), Workload(**work)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err


def _nearest_divisor(n: int, x: float) -> int:
    """The divisor of n closest to x (ties: the larger)."""
    return min((k for k in range(1, n + 1) if n % k == 0), key=lambda k: (abs(k - x), -k))


def _knobs_from_trial(target: ArchConfig, trial: ArchConfig) -> dict[str, Any]:
    """The trial's knob values carried to the target's sizes (proportional where a knob is a fraction)."""
    knobs = {k: getattr(trial, k) for k in KNOB_FIELDS}
    knobs["precision"] = trial.precision.__dict__.copy()
    if trial.kv_heads is not None:  # keep the fraction of kv heads, as a divisor of the target's heads
        knobs["kv_heads"] = _nearest_divisor(target.n_heads, target.n_heads * trial.n_kv / trial.n_heads)
    if trial.sharing in _FRACTIONAL_SHARING:  # keep the fraction of unique layers
        m = max(1.0, target.n_layers * trial.n_unique / trial.n_layers)
        if trial.sharing == "cycle":
            knobs["unique_layers"] = min(target.n_layers, round(m))
        else:  # sequence and cycle_rev need M | L
            knobs["unique_layers"] = _nearest_divisor(target.n_layers, m)
    else:
        knobs["unique_layers"] = None
    return knobs


def apply_knobs(target: ArchConfig, trial: ArchConfig | Mapping[str, Any]) -> ArchConfig:
    """The target's sizes with a trial's knobs (an ArchConfig of the proxy, or a dict of knobs in target units)."""
    if isinstance(trial, ArchConfig):
        knobs = _knobs_from_trial(target, trial)
    else:
        unknown = sorted(set(trial) - set(KNOB_FIELDS))
        if unknown:
            raise ValueError(f"knob {unknown[0]!r} is not a knob: valid are {', '.join(KNOB_FIELDS)}")
        knobs = dict(trial)
    sizes = {k: getattr(target, k) for k in SIZE_FIELDS}
    try:
        return ArchConfig.from_dict({**sizes, **knobs})
    except ValueError as err:
        raise ValueError(f"the trial's knobs do not fit the target ({err})") from err
