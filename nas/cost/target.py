"""Target scale (conf/target/*.yaml): the full-size model a proxy stands for, and a trial's knobs on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.cost.inference import check_context
from nas.cost.workload import Workload
from nas.knobs import KNOB_FIELDS, SIZE_FIELDS, carry, sizes_of
from nas.model.config import ArchConfig
from nas.profiles import read_profile


def load_target(profile: str | Mapping[str, Any]) -> tuple[ArchConfig, Workload]:
    """The target's dense architecture (every knob at its default) and its training workload.

    `profile` is a name (conf/target/<name>.yaml) or the composed mapping (with any overrides, and `name`).
    """
    if isinstance(profile, str):
        path, data = read_profile("target", profile)
    else:
        path, data = f"target {profile.get('name', '?')!r}", dict(profile)
    arch, work = data.get("arch"), data.get("workload")
    if not isinstance(arch, dict) or not isinstance(work, dict):
        raise ValueError(f"{path}: expected mappings `arch` (ArchConfig sizes) and `workload` (batch, seq_len, "
                         "train_tokens; optional inference: {batch, context})")
    knobs = sorted(set(arch) - set(SIZE_FIELDS))
    if knobs:
        raise ValueError(f"{path}: arch.{knobs[0]} is not a size field: a target is dense; valid are "
                         f"{', '.join(SIZE_FIELDS)}")
    try:
        dense, workload = ArchConfig.from_dict(arch), Workload(**work)
        check_context(dense, workload.serving)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from err
    return dense, workload


def apply_knobs(target: ArchConfig, trial: ArchConfig | Mapping[str, Any]) -> ArchConfig:
    """The target's sizes with a trial's knobs (an ArchConfig of the proxy, or a dict of knobs in target units)."""
    if not isinstance(trial, ArchConfig):
        unknown = sorted(set(trial) - set(KNOB_FIELDS))
        if unknown:
            raise ValueError(f"knob {unknown[0]!r} is not a knob: valid are {', '.join(KNOB_FIELDS)}")
    return carry(trial, sizes_of(target), what="the target")
