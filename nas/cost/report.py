"""The cost objective of a trial: the target model with the trial's knobs, absolute and relative to dense."""

from __future__ import annotations

from collections.abc import Mapping

from dataclasses import dataclass
from typing import Any

from nas.cost.counts import FlopBreakdown, flops, param_counts
from nas.cost.hardware import load_hardware
from nas.cost.memory import MemoryBreakdown, memory
from nas.cost.roofline import StepTime, step_time
from nas.cost.target import apply_knobs, load_target
from nas.cost.workload import Workload
from nas.model.config import ArchConfig


@dataclass(frozen=True)
class CostReport:
    """Costs of a target-size architecture and of the dense baseline of the same target."""

    target: str
    hardware: str
    arch: ArchConfig
    workload: Workload
    flops: FlopBreakdown
    params: dict[str, Any]
    memory: MemoryBreakdown
    time: StepTime
    baseline_flops: FlopBreakdown
    baseline_params: dict[str, Any]
    baseline_memory: MemoryBreakdown
    baseline_time: StepTime

    @property
    def flops_ratio(self) -> float:
        """Training FLOPs / the dense baseline's."""
        return self.flops.step / self.baseline_flops.step

    @property
    def unique_params_ratio(self) -> float:
        """Unique parameters / the dense baseline's."""
        return self.params["unique"] / self.baseline_params["unique"]

    @property
    def memory_ratio(self) -> float:
        """Training memory / the dense baseline's."""
        return self.memory.total / self.baseline_memory.total

    @property
    def time_ratio(self) -> float:
        """Modelled step time / the dense baseline's."""
        return self.time.total / self.baseline_time.total

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able dict of the headline figures (absolute units and ratios)."""
        return {
            "target": self.target,
            "hardware": self.hardware,
            "train_flops": float(self.flops.train_total),
            "step_flops": self.flops.step,
            "params_total": self.params["total"],
            "params_unique": self.params["unique"],
            "memory_bytes": self.memory.total,
            "step_time_s": self.time.total,
            "train_time_s": self.time.total * self.workload.steps,
            "bytes_per_step": self.time.bytes_total,
            "flops_ratio": self.flops_ratio,
            "unique_params_ratio": self.unique_params_ratio,
            "memory_ratio": self.memory_ratio,
            "time_ratio": self.time_ratio,
        }


def _name(profile: str | Mapping[str, Any]) -> str:
    return profile if isinstance(profile, str) else str(profile.get("name", "?"))


def estimate(arch: ArchConfig | dict[str, Any], target: str | Mapping[str, Any] = "gpt_1b",
             hardware: str | Mapping[str, Any] = "h100_sxm", optimizer: str = "adamw") -> CostReport:
    """Costs of a target with a trial's knobs (a proxy ArchConfig or a knob dict) on a hardware profile.

    Target and hardware are profile names or composed mappings (a search's `target` / `hardware` with overrides).
    """
    dense, workload = load_target(target)
    hw = load_hardware(hardware)
    arch_t = apply_knobs(dense, arch)
    return CostReport(
        target=_name(target), hardware=_name(hardware), arch=arch_t, workload=workload,
        flops=flops(arch_t, workload), params=param_counts(arch_t),
        memory=memory(arch_t, workload, optimizer), time=step_time(arch_t, workload, hw, optimizer=optimizer),
        baseline_flops=flops(dense, workload), baseline_params=param_counts(dense),
        baseline_memory=memory(dense, workload, optimizer),
        baseline_time=step_time(dense, workload, hw, optimizer=optimizer),
    )
