"""Analytic cost model: FLOPs, parameters, memory and roofline step time of an architecture at target scale.

counts (FLOPs: matmuls only, training = 3x forward; parameters total and unique), memory (weights, grads,
optimizer state, activations by precision), roofline (bytes moved and modelled step time on a hardware
profile), inference (KV-cache bytes, prefill and decode time at a serving batch and context), target
(conf/target/*.yaml and a trial's knobs at that size), report (the trial's cost objective:
absolute and as ratios to the target's dense baseline).
"""

from __future__ import annotations

from nas.cost.counts import FlopBreakdown, flops, param_counts
from nas.cost.hardware import Hardware, load_hardware
from nas.cost.inference import InferenceCost, inference, kv_cache_bytes
from nas.cost.memory import MemoryBreakdown, memory
from nas.cost.report import Coster, CostReport, estimate
from nas.cost.roofline import StepTime, step_time
from nas.cost.target import apply_knobs, load_target, published_arch
from nas.cost.workload import Serving, Workload

__all__ = [
    "CostReport", "Coster", "FlopBreakdown", "Hardware", "InferenceCost", "MemoryBreakdown", "Serving", "StepTime",
    "Workload", "apply_knobs", "estimate", "flops", "inference", "kv_cache_bytes", "load_hardware", "load_target",
    "memory", "param_counts", "published_arch", "step_time",
]
