"""Hardware profiles (conf/hardware/*.yaml): peak matmul rate per dtype, memory bandwidth, special-function
rate, and how this hardware runs local_global attention and reduced precisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.model.config import ATTENTION_BACKENDS, AttentionBackend
from nas.model.precision import format_dtype
from nas.profiles import read_profile

PEAK_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")
FP32_MATMUL = ("fp32", "tf32")
ROUNDED_FORMATS = ("bf16", "fp16", "fp8_e4m3", "fp8_e5m2")
SPECIAL_FUNCTIONS = ("exp", "tanh")  # softmax exponentials, tanh-approximated GELU
LOCAL_GLOBAL_KERNELS = ATTENTION_BACKENDS  # local_global without the gate runs as flex_attention or the block kernel
ATTENTION_KERNELS = ("flash", "flex", "block")  # SDPA's flash kernel, compiled flex_attention, the block kernel


def dtype_family(fmt: str) -> str:
    """Peak-throughput family of a numeric format: fp32, bf16, fp16 or fp8."""
    format_dtype(fmt)
    return "fp8" if fmt.startswith("fp8") else fmt


@dataclass(frozen=True)
class Hardware:
    """Dense peak FLOP/s per dtype, memory bandwidth, special-function rate, and what is emulated."""

    name: str
    peak_tflops: dict[str, float]  # fp32, tf32, bf16, fp16, fp8 (dense, no 2:4 sparsity)
    bandwidth_gbs: float  # memory bandwidth in GB/s (1e9 bytes/s)
    memory_gb: float
    special_gops: dict[str, float]  # exp and tanh evaluations per second, in 1e9
    special_overlaps: bool = True  # special functions run beside the matmuls (GPU SFUs) or after them (CPU)
    local_global_kernel: AttentionBackend = "flex"  # how local_global attention without the gate runs here
    attention_efficiency: dict[str, float] = field(default_factory=dict)  # attained fraction of the matmul peak
    emulated: bool = False  # True: bf16/fp16/fp8 are stored as fp32 and rounded in software
    emulation_bytes: dict[str, float] = field(default_factory=dict)  # per format: bytes-equivalent per rounding

    def matmul_flops_per_s(self, fmt: str, fp32_matmul: str = "fp32") -> float:
        """Peak matmul FLOP/s for operands in a numeric format (fp32 matmuls run as `fp32_matmul`)."""
        family = dtype_family(fmt)
        return self.peak_tflops[fp32_matmul if family == "fp32" else family] * 1e12

    def kernel_efficiency(self, kernel: str) -> float:
        """Fraction of the matmul peak an attention kernel attains here (1 where not measured)."""
        return self.attention_efficiency.get(kernel, 1.0)

    def storage_bytes(self, fmt: str) -> int:
        """Bytes per element a tensor in this format occupies here (emulated formats are stored as fp32)."""
        return 4 if self.emulated else format_dtype(fmt).itemsize

    def rounding_bytes(self, fmt: str) -> float:
        """Extra bytes moved to round one element to `fmt` in software (0 where the dtype is native)."""
        format_dtype(fmt)
        return self.emulation_bytes[fmt] if self.emulated and fmt != "fp32" else 0.0


def load_hardware(profile: str | Mapping[str, Any]) -> Hardware:
    """A hardware profile: conf/hardware/<name>.yaml, or its composed mapping (with any overrides, and `name`)."""
    path: Path | str  # the profile's file, else how the composed mapping is named in messages
    if isinstance(profile, str):
        path, data = read_profile("hardware", profile)
        name = profile
    else:
        data, name = dict(profile), str(profile.get("name", "hardware"))
        path = f"hardware {name!r}"
    peaks = data.get("peak_tflops")
    if not isinstance(peaks, dict):
        raise ValueError(f"{path}: peak_tflops must be a mapping of {', '.join(PEAK_DTYPES)} to TFLOP/s")
    resolved: dict[str, float] = {}
    for dtype in PEAK_DTYPES:
        value = peaks.get(dtype, "missing")
        if value is None and dtype == "fp8":  # no fp8 tensor cores: fp8 layers run at the bf16 rate
            value = peaks.get("bf16")
        if not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{path}: peak_tflops.{dtype}={value!r} is invalid: expected a number > 0"
                             + (" (or null for fp8: falls back to bf16)" if dtype == "fp8" else ""))
        resolved[dtype] = float(value)
    for key in ("memory_bandwidth_gbs", "memory_gb"):
        if not isinstance(data.get(key), (int, float)) or data[key] <= 0:
            raise ValueError(f"{path}: {key}={data.get(key)!r} is invalid: expected a number > 0")
    special = data.get("special_gops")
    if not isinstance(special, dict) or sorted(special) != sorted(SPECIAL_FUNCTIONS) or not all(
            isinstance(v, (int, float)) and v > 0 for v in special.values()):
        raise ValueError(f"{path}: special_gops={special!r} is invalid: expected a number > 0 for each of "
                         f"{', '.join(SPECIAL_FUNCTIONS)} (evaluations per second / 1e9)")
    kernel = data.get("local_global_kernel", "flex")
    if kernel not in LOCAL_GLOBAL_KERNELS:
        raise ValueError(f"{path}: local_global_kernel={kernel!r} is invalid: "
                         f"valid are {', '.join(LOCAL_GLOBAL_KERNELS)}")
    efficiency = data.get("attention_efficiency", {}) or {}
    if not set(efficiency) <= set(ATTENTION_KERNELS) or not all(
            isinstance(v, (int, float)) and 0 < v <= 1 for v in efficiency.values()):
        raise ValueError(f"{path}: attention_efficiency={efficiency!r} is invalid: expected numbers in (0, 1] "
                         f"for some of {', '.join(ATTENTION_KERNELS)}")
    emulated = bool(data.get("emulated", False))
    emulation = data.get("emulation_bytes_per_element", {}) or {}
    if emulated and (sorted(emulation) != sorted(ROUNDED_FORMATS)
                     or not all(isinstance(v, (int, float)) and v >= 0 for v in emulation.values())):
        raise ValueError(f"{path}: emulation_bytes_per_element={emulation!r} is invalid: an emulated profile "
                         f"needs a number >= 0 for each of {', '.join(ROUNDED_FORMATS)}")
    return Hardware(name=name, peak_tflops=resolved, bandwidth_gbs=float(data["memory_bandwidth_gbs"]),
                    memory_gb=float(data["memory_gb"]), special_gops={k: float(v) for k, v in special.items()},
                    special_overlaps=bool(data.get("special_overlaps", True)), local_global_kernel=kernel,
                    attention_efficiency={k: float(v) for k, v in efficiency.items()}, emulated=emulated,
                    emulation_bytes={k: float(v) for k, v in emulation.items()})
