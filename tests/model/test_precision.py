"""Mixed precision: format round trips against the real torch dtypes and closed-form format facts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.model.config import PrecisionConfig
from nas.model.precision import (
    FORMAT_DTYPES,
    AdaptivePrecision,
    _QuantLinear,
    format_dtype,
    fp8_scale,
    is_fp8,
    precision_linear,
    quantize,
    quantize_activation,
)

E4M3_MAX, E5M2_MAX = 448.0, 57344.0
# unit roundoff 2^-(mantissa bits + 1): e4m3 3 bits, e5m2 2, bf16 7, fp16 10
UNIT_ROUNDOFF = {"fp8_e4m3": 2.0**-4, "fp8_e5m2": 2.0**-3, "bf16": 2.0**-8, "fp16": 2.0**-11}
# smallest normal number of each format: 2^(1 - bias)
MIN_NORMAL = {"fp8_e4m3": 2.0**-6, "fp8_e5m2": 2.0**-14, "bf16": 2.0**-126, "fp16": 2.0**-14}
MAX_VALUE = {"fp8_e4m3": E4M3_MAX, "fp8_e5m2": E5M2_MAX, "bf16": 3.0e38, "fp16": 65504.0}


def manual_fp8(x: torch.Tensor, dtype: torch.dtype, top: float) -> torch.Tensor:
    """Per-tensor scaled fp8 round trip written out from the format's definition."""
    scale = top / x.abs().amax()
    return (x * scale).clamp(-top, top).to(dtype).float() / scale


def test_format_table_and_errors() -> None:
    assert format_dtype("fp8_e4m3") is torch.float8_e4m3fn and format_dtype("fp8_e5m2") is torch.float8_e5m2
    assert [f for f in FORMAT_DTYPES if is_fp8(f)] == ["fp8_e4m3", "fp8_e5m2"]
    with pytest.raises(ValueError, match="'fp4'.*fp32, bf16, fp16, fp8_e4m3, fp8_e5m2"):
        format_dtype("fp4")
    with pytest.raises(ValueError, match="fp7"):
        precision_linear(torch.ones(2, 2), torch.ones(2, 2), None, "fp7")


UNIT_ROUNDOFF = {"fp32": 0.0, "fp16": 2.0**-11, "bf16": 2.0**-8, "fp8_e4m3": 2.0**-4, "fp8_e5m2": 2.0**-3}  # 2^-(m+1)


@pytest.mark.parametrize("fmt", list(FORMAT_DTYPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_keeps_dtype_and_shape_and_rounds_within_the_formats_unit_roundoff(fmt: str, dtype) -> None:
    x = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0)).to(dtype)
    y = quantize(x, fmt)
    assert y.dtype == dtype and y.shape == x.shape
    normal = x.float().abs() >= x.float().abs().amax() / 32  # away from the fp8 formats' subnormal range
    err = ((y.float() - x.float()).abs() / x.float().abs())[normal]
    # round to nearest: relative error <= 2^-(mantissa bits + 1) (the input's own rounding bounds it too)
    assert float(err.max()) <= UNIT_ROUNDOFF[fmt] * (1 + 1e-6)


def test_coarser_formats_round_more() -> None:
    x = torch.randn(4096, generator=torch.Generator().manual_seed(1))
    worst = {fmt: float(((quantize(x, fmt) - x).abs() / x.abs())[x.abs() > 0.1].max()) for fmt in UNIT_ROUNDOFF}
    order = sorted(UNIT_ROUNDOFF, key=UNIT_ROUNDOFF.get)  # fp32 < fp16 < bf16 < e4m3 < e5m2
    assert [worst[f] for f in order] == sorted(worst.values()) and worst["fp32"] == 0.0
    for fmt in order[1:]:  # 4096 draws come close to each bound: the formats are told apart
        assert UNIT_ROUNDOFF[fmt] / 2 < worst[fmt] <= UNIT_ROUNDOFF[fmt]


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
def test_powers_of_two_round_trip_exactly(fmt: str) -> None:
    x = 2.0 ** torch.arange(-6, 9, dtype=torch.float32)
    x = torch.cat([x, -x])
    assert torch.equal(quantize(x, fmt, scale=1.0), x)


def test_saturation_at_format_max() -> None:
    x = torch.tensor([449.0, 1000.0, 1e6, -500.0, -1e9])
    assert torch.equal(quantize(x, "fp8_e4m3", scale=1.0), torch.tensor([448.0] * 3 + [-448.0] * 2))
    x5 = torch.tensor([6e4, 1e7, -1e7])
    assert torch.equal(quantize(x5, "fp8_e5m2", scale=1.0), torch.tensor([E5M2_MAX, E5M2_MAX, -E5M2_MAX]))
    assert torch.equal(quantize(torch.tensor([1e5, -1e9]), "fp16"), torch.tensor([65504.0, -65504.0]))


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2", "bf16", "fp16"])
def test_relative_error_in_normal_range(fmt: str) -> None:
    # log-uniform magnitudes across the whole normal range, both signs
    lo, hi = np.log2(MIN_NORMAL[fmt]), np.log2(min(MAX_VALUE[fmt], 1e4))
    mag = 2.0 ** (lo + (hi - lo) * torch.rand(4000, dtype=torch.float64))
    x = (mag * torch.sign(torch.randn(4000, dtype=torch.float64))).float()
    scale = 1.0 if is_fp8(fmt) else None
    rel = ((quantize(x, fmt, scale=scale) - x).abs() / x.abs()).max().item()
    assert rel <= UNIT_ROUNDOFF[fmt]
    assert rel > UNIT_ROUNDOFF[fmt] / 2  # rounding really happens at this precision, not a finer one


def test_bf16_fp16_match_torch_casts() -> None:
    x = torch.randn(100) * 10
    assert torch.equal(quantize(x, "bf16"), x.bfloat16().float())
    assert torch.equal(quantize(x, "fp16"), x.half().float())
    assert quantize(x, "fp32") is x


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
def test_per_tensor_scaling_rescues_tiny_values(fmt: str) -> None:
    x = torch.randn(256) * 1e-6
    assert torch.count_nonzero(quantize(x, fmt, scale=1.0)) == 0  # unscaled: below the smallest subnormal
    scale = fp8_scale(x, fmt)
    assert scale.dtype == torch.float32 and scale.dim() == 0
    torch.testing.assert_close(scale, torch.finfo(FORMAT_DTYPES[fmt]).max / x.abs().max())
    q = quantize(x, fmt)
    rel = (q - x).norm() / x.norm()
    assert rel < UNIT_ROUNDOFF[fmt]
    assert torch.equal(q, manual_fp8(x, FORMAT_DTYPES[fmt], torch.finfo(FORMAT_DTYPES[fmt]).max))


def test_zero_tensor_scales_without_nan() -> None:
    z = torch.zeros(4, 4)
    assert torch.isfinite(fp8_scale(z, "fp8_e4m3"))
    assert torch.equal(quantize(z, "fp8_e4m3"), z)


def test_fp32_linear_is_f_linear_exactly() -> None:
    x = torch.randn(2, 5, 16, requires_grad=True)
    w = torch.randn(8, 16, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    y = precision_linear(x, w, b, "fp32")
    x2, w2, b2 = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y_ref = F.linear(x2, w2, b2)
    assert torch.equal(y, y_ref)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert torch.equal(x.grad, x2.grad) and torch.equal(w.grad, w2.grad) and torch.equal(b.grad, b2.grad)


def _rel_frob(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("fmt", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_linear_error_within_format_bound(fmt: str) -> None:
    x, w = torch.randn(32, 64), torch.randn(48, 64) / 8
    y_ref = x @ w.t()
    y = precision_linear(x, w, None, fmt)
    # Each scaled operand element is rounded with relative error <= u (normal range), so every product
    # x_ik w_jk carries relative error <= 2u + u^2, and |y - y_ref| <= (2u + u^2) (|x| |w|^T) elementwise.
    # Elements landing in fp8's subnormal range break the per-element bound, but their absolute error is
    # at most ~2^-10 amax / max_fp8; in Frobenius norm they are negligible, hence the norm comparison.
    u = UNIT_ROUNDOFF[fmt]
    bound = (2 * u + u * u) * (x.abs() @ w.abs().t()).norm().item()
    err = (y - y_ref).norm().item()
    assert err <= bound
    assert _rel_frob(y, y_ref) > _rel_frob(precision_linear(x, w, None, "bf16"), y_ref)
    assert _rel_frob(precision_linear(x, w, None, "bf16"), y_ref) > 0
    # the emulated forward is exactly the product of the manually quantized operands (fp32 accumulation)
    top = torch.finfo(FORMAT_DTYPES[fmt]).max
    assert torch.equal(y, manual_fp8(x, FORMAT_DTYPES[fmt], top) @ manual_fp8(w, FORMAT_DTYPES[fmt], top).t())


def test_fp8_gradients_use_e5m2_grad_output() -> None:
    x = torch.randn(24, 32, requires_grad=True)
    w = torch.randn(16, 32, requires_grad=True)
    b = torch.randn(16, requires_grad=True)
    y = precision_linear(x, w, b, "fp8_e4m3")
    g = torch.randn(24, 16)
    y.backward(g)

    xq = manual_fp8(x.detach(), torch.float8_e4m3fn, E4M3_MAX)
    wq = manual_fp8(w.detach(), torch.float8_e4m3fn, E4M3_MAX)
    gq = manual_fp8(g, torch.float8_e5m2, E5M2_MAX)
    assert torch.equal(w.grad, gq.t() @ xq)
    assert torch.equal(x.grad, gq @ wq)
    torch.testing.assert_close(b.grad, g.sum(0))
    assert not torch.equal(w.grad, g.t() @ xq)  # the gradient really was quantized
    assert w.grad.dtype == torch.float32  # it lands on the fp32 master weight

    # close to the fp32 gradient: g^T x with g rounded by u5 and x by u4 -> relative error <= u4 + u5 + u4 u5
    u4, u5 = UNIT_ROUNDOFF["fp8_e4m3"], UNIT_ROUNDOFF["fp8_e5m2"]
    exact = g.t() @ x.detach()
    bound = (u4 + u5 + u4 * u5) * (g.abs().t() @ x.detach().abs()).norm()
    assert (w.grad - exact).norm() <= bound
    assert _rel_frob(w.grad, exact) < 0.1


@pytest.mark.parametrize("fmt", ["bf16", "fp16"])
def test_half_precision_gradients_round_grad_output_to_same_dtype(fmt: str) -> None:
    dtype = FORMAT_DTYPES[fmt]
    x = torch.randn(2, 6, 16, requires_grad=True)
    w = torch.randn(8, 16, requires_grad=True)
    y = precision_linear(x, w, None, fmt)
    g = torch.randn_like(y)
    y.backward(g)
    xq, wq, gq = x.detach().to(dtype).float(), w.detach().to(dtype).float(), g.to(dtype).float()
    torch.testing.assert_close(y, xq @ wq.t(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(w.grad, gq.reshape(-1, 8).t() @ xq.reshape(-1, 16), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad, gq @ wq, rtol=1e-6, atol=1e-6)
    assert x.grad.shape == x.shape


def test_real_bf16_path_agrees_with_emulation() -> None:
    x = torch.randn(4, 16)
    w = torch.randn(8, 16, requires_grad=True)
    real = precision_linear(x, w, None, "bf16", emulate=False)
    emulated = precision_linear(x, w, None, "bf16", emulate=True)
    assert real.dtype == torch.float32
    # the real path also rounds its output to bf16: one more rounding of |y| <= sum |x||w|
    torch.testing.assert_close(real, emulated, rtol=2.0**-8, atol=1e-6)
    real.sum().backward()
    assert w.grad is not None and w.grad.dtype == torch.float32


def test_scaled_mm_forward_matches_emulation() -> None:
    # torch._scaled_mm runs on CPU too, so the CUDA kernel's layout and scale conventions are checked here
    x = torch.randn(32, 64, requires_grad=True)
    w = torch.randn(48, 64, requires_grad=True)
    b = torch.randn(48)
    fast = _QuantLinear.apply(x, w, b, "fp8_e4m3", True)
    slow = _QuantLinear.apply(x, w, b, "fp8_e4m3", False)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    (gw,) = torch.autograd.grad(fast.sum(), w)
    (gw_slow,) = torch.autograd.grad(slow.sum(), w)
    assert torch.equal(gw, gw_slow)


def test_cpu_never_takes_the_scaled_mm_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("_scaled_mm called on CPU")

    monkeypatch.setattr(torch, "_scaled_mm", boom)
    y = precision_linear(torch.randn(16, 32), torch.randn(16, 32), None, "fp8_e4m3", emulate=False)
    assert y.shape == (16, 16)


@pytest.mark.parametrize("fmt", ["bf16", "fp8_e4m3"])
def test_quantize_activation_is_straight_through(fmt: str) -> None:
    x = torch.randn(3, 8, requires_grad=True)
    y = quantize_activation(x, fmt)
    assert torch.equal(y, quantize(x.detach(), fmt))
    assert not torch.equal(y, x)
    g = torch.randn(3, 8)
    y.backward(g)
    assert torch.equal(x.grad, g)
    assert quantize_activation(x, "fp32") is x


def _expected_switch(losses: np.ndarray, window: int, threshold: float) -> int | None:
    """Index of the first observation where two consecutive window means differ by < threshold (relative)."""
    means = np.convolve(losses, np.ones(window) / window, mode="valid")  # means[i] = mean(losses[i:i+w])
    for end in range(2 * window - 1, len(losses)):
        before, recent = means[end - 2 * window + 1], means[end - window + 1]
        if abs(recent - before) / abs(before) < threshold:
            return end
    return None


def test_adaptive_switches_at_first_stable_step() -> None:
    window, threshold = 10, 0.01
    t = np.arange(300)
    rng = np.random.default_rng(0)
    losses = 2.0 + 3.0 * np.exp(-t / 25.0) + 0.002 * rng.standard_normal(300)
    expected = _expected_switch(losses, window, threshold)
    assert expected is not None and expected > 2 * window  # the decay phase really delays it

    ap = AdaptivePrecision(window, threshold)
    assert ap.current_format == "fp32" and ap.switch_step is None and not ap.switched
    fired = [i for i, loss in enumerate(losses) if ap.observe(100 + 5 * i, float(loss))]
    assert fired == [expected]
    assert ap.switch_step == 100 + 5 * expected
    assert ap.switched and ap.current_format == "fp8_e4m3"


def test_adaptive_never_before_two_windows_and_never_back() -> None:
    ap = AdaptivePrecision(window=4, threshold=0.9, target_format="fp8_e5m2")
    results = [ap.observe(step, 1.0) for step in range(8)]  # flat from the start, loose threshold: still waits
    assert results == [False] * 7 + [True]
    assert ap.switch_step == 7
    for step, loss in enumerate([100.0, 0.1, 50.0, 1e-3] * 5, start=8):  # wildly unstable afterwards
        assert ap.observe(step, loss) is False
    assert ap.current_format == "fp8_e5m2" and ap.switch_step == 7


def test_adaptive_does_not_switch_while_loss_falls() -> None:
    ap = AdaptivePrecision(window=5, threshold=0.01)
    assert not any(ap.observe(i, 10.0 * 0.9**i) for i in range(200))  # 10% per step: never stable
    assert ap.switch_step is None and ap.current_format == "fp32"


def test_adaptive_from_config_and_validation() -> None:
    pc = PrecisionConfig(ffn="adaptive", adaptive_format="fp8_e5m2", adaptive_window=3, adaptive_threshold=0.2)
    ap = AdaptivePrecision.from_config(pc)
    assert (ap.window, ap.threshold, ap.target_format) == (3, 0.2, "fp8_e5m2")
    with pytest.raises(ValueError, match="window=0"):
        AdaptivePrecision(0, 0.1)
    with pytest.raises(ValueError, match="threshold=-1"):
        AdaptivePrecision(3, -1)
    with pytest.raises(ValueError, match="fp9"):
        AdaptivePrecision(3, 0.1, "fp9")
