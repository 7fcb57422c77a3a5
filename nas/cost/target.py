"""Target scale (conf/target/*.yaml): the full-size model a proxy stands for, and a trial's knobs on it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.cost.inference import check_context
from nas.cost.workload import Workload
from nas.knobs import KNOB_FIELDS, SIZE_FIELDS, carry, sizes_of
from nas.model.config import ArchConfig
from nas.profiles import read_profile

HF = "hf:"  # target=hf:PATH: a local transformers config.json or model folder (conf/target/hf.yaml)
CHINCHILLA_TOKENS = 20  # training tokens per parameter where a config states none (Hoffmann et al. 2022)


def _read(profile: str | Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    if isinstance(profile, str) and profile.startswith(HF):
        return f"target={profile}", {"name": profile, "hf_path": profile[len(HF):], "workload": {}}
    if isinstance(profile, str):
        return read_profile("target", profile)
    return f"target {profile.get('name', '?')!r}", dict(profile)


def _hf_target(data: dict[str, Any]) -> tuple[ArchConfig, Workload, dict[str, Any]]:
    """A transformers config as a target: its sizes, a workload (unset: one sequence of the config's context per
    step, 20 training tokens per parameter) and the knobs it ships."""
    from nas.cost.counts import param_counts
    from nas.model.hf import arch_from_hf

    path, work = data["hf_path"], dict(data.get("workload") or {})
    if not path:
        raise ValueError("target=hf needs its config: target=hf:PATH (a local config.json or model folder)")
    arch, knobs = arch_from_hf(path)
    if work.get("seq_len") is not None:
        arch = arch.replace(seq_len=work["seq_len"])
    work = {"batch": 1, "seq_len": arch.seq_len, **{k: v for k, v in work.items() if v is not None}}
    work.setdefault("train_tokens", CHINCHILLA_TOKENS * param_counts(arch)["unique"])
    try:
        return arch, Workload(**work), knobs
    except (TypeError, ValueError) as err:
        raise ValueError(f"target=hf:{path}: workload: {err}") from err


def load_target(profile: str | Mapping[str, Any]) -> tuple[ArchConfig, Workload]:
    """The target's dense architecture (every knob at its default) and its training workload.

    `profile` is a name (conf/target/<name>.yaml), `hf:PATH` (a local transformers config.json or model folder)
    or the composed mapping (with any overrides, and `name`; conf/target/hf.yaml's carries `hf_path`).
    """
    path, data = _read(profile)
    if data.get("hf_path") is not None or data.get("name") == "hf":
        return _hf_target(data)[:2]
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


def published_arch(profile: str | Mapping[str, Any]) -> ArchConfig:
    """The released model a target stands for: its dense sizes with the knobs of its `published:` mapping
    (target units; e.g. a published model's GQA and sliding window). Without the mapping, the dense architecture."""
    path, data = _read(profile)
    dense, _ = load_target(profile)
    knobs: Any = _hf_target(data)[2] if data.get("hf_path") is not None else data.get("published") or {}
    if not isinstance(knobs, Mapping):
        raise ValueError(f"{path}: published={knobs!r} is invalid: expected a mapping of knobs "
                         f"({', '.join(KNOB_FIELDS)})")
    try:
        return apply_knobs(dense, dict(knobs))
    except ValueError as err:
        raise ValueError(f"{path}: published: {err}") from err
