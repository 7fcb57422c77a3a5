"""The cost objective of a trial: the target model with the trial's knobs, absolute and relative to dense."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nas.cost.counts import FlopBreakdown, flops, param_counts
from nas.cost.hardware import load_hardware
from nas.cost.inference import InferenceCost, inference
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
    inference: InferenceCost
    baseline_inference: InferenceCost

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

    @property
    def kv_cache_ratio(self) -> float:
        """KV-cache bytes per sequence at the serving context / the dense baseline's."""
        return self.inference.kv_cache_bytes / self.baseline_inference.kv_cache_bytes

    @property
    def prefill_time_ratio(self) -> float:
        """Modelled prefill time at the serving batch and context / the dense baseline's."""
        return self.inference.prefill.total / self.baseline_inference.prefill.total

    @property
    def decode_time_ratio(self) -> float:
        """Modelled decode time per token at the serving batch and context / the dense baseline's."""
        return self.inference.decode.total / self.baseline_inference.decode.total

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
            **self.inference.to_dict(),
            "kv_cache_ratio": self.kv_cache_ratio,
            "prefill_time_ratio": self.prefill_time_ratio,
            "decode_time_ratio": self.decode_time_ratio,
        }


def _name(profile: str | Mapping[str, Any]) -> str:
    if isinstance(profile, str):
        return profile
    return f"hf:{profile['hf_path']}" if profile.get("hf_path") else str(profile.get("name", "?"))


class Coster:
    """One target on one hardware profile: profiles read and the dense baseline costed once, then any knobs.

    Target and hardware are profile names or composed mappings (a search's `target` / `hardware` with overrides).
    """

    def __init__(self, target: str | Mapping[str, Any] = "llama3.2_1b_32k",
                 hardware: str | Mapping[str, Any] = "h100_sxm", optimizer: str = "adamw") -> None:
        self.target, self.hardware, self.optimizer = _name(target), _name(hardware), optimizer
        self.dense, self.workload = load_target(target)
        self.hw = load_hardware(hardware)
        self.baseline = self._costs(self.dense)
        self.baseline_inference = self._inference(self.dense)

    def _costs(self, arch: ArchConfig) -> tuple[FlopBreakdown, dict[str, Any], MemoryBreakdown, StepTime]:
        w, opt = self.workload, self.optimizer
        return flops(arch, w), param_counts(arch), memory(arch, w, opt), step_time(arch, w, self.hw, optimizer=opt)

    def _inference(self, arch: ArchConfig) -> InferenceCost:
        return inference(arch, self.workload.serving, self.hw)

    def target_arch(self, arch: ArchConfig | dict[str, Any]) -> ArchConfig:
        """A trial's knobs (a proxy ArchConfig or a knob dict in target units) at the target's size."""
        return apply_knobs(self.dense, arch)

    def estimate(self, arch: ArchConfig | dict[str, Any]) -> CostReport:
        """Costs of the target with a trial's knobs, absolute and relative to the dense baseline."""
        arch_t = self.target_arch(arch)
        f, p, m, t = self._costs(arch_t)
        bf, bp, bm, bt = self.baseline
        return CostReport(target=self.target, hardware=self.hardware, arch=arch_t, workload=self.workload,
                          flops=f, params=p, memory=m, time=t, baseline_flops=bf, baseline_params=bp,
                          baseline_memory=bm, baseline_time=bt, inference=self._inference(arch_t),
                          baseline_inference=self.baseline_inference)


def estimate(arch: ArchConfig | dict[str, Any], target: str | Mapping[str, Any] = "llama3.2_1b_32k",
             hardware: str | Mapping[str, Any] = "h100_sxm", optimizer: str = "adamw") -> CostReport:
    """Costs of a target with a trial's knobs (a proxy ArchConfig or a knob dict) on a hardware profile."""
    return Coster(target, hardware, optimizer).estimate(arch)
