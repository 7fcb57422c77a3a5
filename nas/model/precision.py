"""Numeric formats for layers: fp32, bf16, fp16 and scaled fp8, emulated on CPU and real on CUDA.

Emulation is a round trip through the real torch dtype (per-tensor scaling for fp8) with fp32
accumulation. fp8 follows the Transformer Engine HYBRID recipe: the forward pass in the chosen
format, gradients in e5m2. Gradients reach the fp32 master weights (mixed precision training).
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.checks import check_int
from nas.model.config import PrecisionConfig

FORMAT_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
_AMAX_EPS = 1e-12  # an all-zero tensor gets a finite scale instead of a division by zero
_GRAD_FP8 = "fp8_e5m2"  # HYBRID recipe: gradients need range more than mantissa


def format_dtype(fmt: str) -> torch.dtype:
    """The torch dtype of a format name."""
    if fmt not in FORMAT_DTYPES:
        raise ValueError(f"precision format {fmt!r} is invalid: expected one of {', '.join(FORMAT_DTYPES)}")
    return FORMAT_DTYPES[fmt]


def is_fp8(fmt: str) -> bool:
    """Whether a format is one of the fp8 formats."""
    return format_dtype(fmt).itemsize == 1


def fp8_scale(x: Tensor, fmt: str) -> Tensor:
    """Per-tensor scale mapping amax(|x|) to the fp8 format's largest value, as an fp32 scalar."""
    amax = x.detach().abs().amax().float().clamp(min=_AMAX_EPS)
    return torch.finfo(format_dtype(fmt)).max / amax


def _to_fp8(x: Tensor, fmt: str, scale: Tensor | float) -> Tensor:
    """x * scale saturated to the format's range and cast to the fp8 dtype."""
    top = torch.finfo(format_dtype(fmt)).max
    return (x.float() * scale).clamp(-top, top).to(format_dtype(fmt))


def quantize(x: Tensor, fmt: str, scale: Tensor | float | None = None) -> Tensor:
    """x rounded to the format and back to x's dtype (fp8: per-tensor scaled unless `scale` is given)."""
    dtype = format_dtype(fmt)
    if fmt == "fp32":
        return x
    if not is_fp8(fmt):
        if dtype == torch.float16:
            top = torch.finfo(dtype).max
            x_sat = x.clamp(-top, top)  # saturate rather than overflow to inf
            return x_sat.to(dtype).to(x.dtype)
        return x.to(dtype).to(x.dtype)
    if scale is None:
        scale = fp8_scale(x, fmt)
    return (_to_fp8(x, fmt, scale).float() / scale).to(x.dtype)


def _use_scaled_mm(x: Tensor, weight: Tensor, fmt: str) -> bool:
    """Whether torch._scaled_mm can run this fp8 linear on x's device."""
    if not (x.is_cuda and fmt == "fp8_e4m3" and hasattr(torch, "_scaled_mm")):
        return False  # e5m2 x e5m2 is not a cuBLASLt fp8 combination
    if torch.cuda.get_device_capability(x.device) < (8, 9):
        return False
    rows = x.numel() // x.shape[-1]
    return rows % 16 == 0 and x.shape[-1] % 16 == 0 and weight.shape[0] % 16 == 0


class _QuantLinear(torch.autograd.Function):
    """y = q(x) q(W)^T + b with fp32 accumulation; backward with q_grad(dy) against the saved q(x), q(W)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, fmt: str, scaled_mm: bool) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1]).float().contiguous()  # (rows, in), row-major for _scaled_mm
        w = weight.float()  # (out, in)
        if is_fp8(fmt):
            sx, sw = fp8_scale(x2, fmt), fp8_scale(w, fmt)
            x8, w8 = _to_fp8(x2, fmt, sx), _to_fp8(w, fmt, sw)
            xq, wq = x8.float() / sx, w8.float() / sw
            if scaled_mm:  # w8.t() is column-major, as _scaled_mm wants its second operand
                out = torch._scaled_mm(
                    x8, w8.t(), scale_a=sx.reciprocal(), scale_b=sw.reciprocal(), out_dtype=torch.float32
                )
            else:
                out = xq @ wq.t()
        else:
            xq, wq = quantize(x2, fmt), quantize(w, fmt)
            out = xq @ wq.t()
        if bias is not None:
            out = out + bias.float()
        ctx.save_for_backward(xq, wq)
        ctx.fmt, ctx.has_bias = fmt, bias is not None
        ctx.x_shape, ctx.x_dtype, ctx.w_dtype = x.shape, x.dtype, weight.dtype
        return out.reshape(*x.shape[:-1], out.shape[-1]).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        xq, wq = ctx.saved_tensors
        g2 = grad_out.reshape(-1, grad_out.shape[-1]).float()  # (rows, out)
        gq = quantize(g2, _GRAD_FP8 if is_fp8(ctx.fmt) else ctx.fmt)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (gq @ wq).reshape(ctx.x_shape).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            grad_w = (gq.t() @ xq).to(ctx.w_dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)  # bias gradient from the unquantized fp32 gradient, as in TE
        return grad_x, grad_w, grad_b, None, None


def precision_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, fmt: str, emulate: bool | None = None
) -> Tensor:
    """F.linear computed in the given format (emulated on CPU or when `emulate`; real dtypes on CUDA)."""
    format_dtype(fmt)
    if fmt == "fp32":
        return F.linear(x, weight, bias)
    if emulate is None:
        emulate = not x.is_cuda
    if not emulate and not is_fp8(fmt):
        dtype = format_dtype(fmt)
        b = bias.to(dtype) if bias is not None else None
        return F.linear(x.to(dtype), weight.to(dtype), b).to(x.dtype)
    scaled_mm = not emulate and _use_scaled_mm(x, weight, fmt)
    return _QuantLinear.apply(x, weight, bias, fmt, scaled_mm)


class _StraightThrough(torch.autograd.Function):
    """Forward: quantize; backward: identity."""

    @staticmethod
    def forward(ctx, x: Tensor, fmt: str) -> Tensor:
        return quantize(x, fmt)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None]:
        return grad_out, None


def quantize_activation(x: Tensor, fmt: str) -> Tensor:
    """x rounded to the format in the forward pass, gradient passed straight through."""
    format_dtype(fmt)
    if fmt == "fp32":
        return x
    return _StraightThrough.apply(x, fmt)


class AdaptivePrecision:
    """Switches a layer type from fp32 to `target_format` once the loss has stopped moving."""

    def __init__(self, window: int, threshold: float, target_format: str = "fp8_e4m3") -> None:
        check_int("AdaptivePrecision window", window)
        if not isinstance(threshold, (int, float)) or not threshold > 0:
            raise ValueError(f"AdaptivePrecision threshold={threshold!r} is invalid: expected a number > 0")
        format_dtype(target_format)
        self.window = window
        self.threshold = float(threshold)
        self.target_format = target_format
        self.switch_step: int | None = None
        self._losses: deque[float] = deque(maxlen=2 * window)

    @classmethod
    def from_config(cls, precision: PrecisionConfig) -> "AdaptivePrecision":
        """Built from the adaptive_* fields of a PrecisionConfig."""
        return cls(precision.adaptive_window, precision.adaptive_threshold, precision.adaptive_format)

    @property
    def switched(self) -> bool:
        """Whether the switch has happened."""
        return self.switch_step is not None

    @property
    def current_format(self) -> str:
        """fp32 before the switch, the target format after it."""
        return self.target_format if self.switched else "fp32"

    def state_dict(self) -> dict:
        """Checkpointable state: the switch step and the loss window."""
        return {"switch_step": self.switch_step, "losses": list(self._losses)}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict returned."""
        self.switch_step = state["switch_step"]
        self._losses.clear()
        self._losses.extend(state["losses"])

    def observe(self, step: int, loss: float) -> bool:
        """Record a loss; True exactly on the step where the mean of the last window moved < threshold."""
        if self.switched:
            return False
        self._losses.append(float(loss))
        if len(self._losses) < 2 * self.window:
            return False
        losses = list(self._losses)
        before = sum(losses[: self.window]) / self.window
        recent = sum(losses[self.window :]) / self.window
        if abs(recent - before) < self.threshold * abs(before):
            self.switch_step = step
            return True
        return False
