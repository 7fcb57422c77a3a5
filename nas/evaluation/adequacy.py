"""Proxy adequacy: before trials are spent, check that the proxy can see what the space's knobs cost.

The dense baseline of the space is trained once at the proxy on the task; then, per kind of knob searched:

- attention (attention, window, global_tokens, gate): the dense model must recall keys from beyond the largest
  window searched (MQAR accuracy at those distances >= chance + RECALL_MARGIN, chance = 1 / num_pairs: a guess
  among the values in view), and its loss must fall with context (bpb on the second half of the positions
  <= (1 - CONTEXT_GAIN) x bpb on the first 8). A proxy that fails cannot tell a window from dense attention:
  a narrow window then wins by training faster, not by costing nothing.
- capacity (kv_heads, group_share, sharing, ...): the dense model must have learned the data well beyond its
  byte frequencies (bpb <= CAPACITY_RATIO x the unigram entropy of the validation bytes): a proxy that has
  not, cannot show what removing capacity costs.
- sharing patterns: every two configurations of the space's sharing knobs that are different models at
  COMPARE_DEPTH layers must be different models at the proxy's depth (at 2 layers `all`, `cycle` and
  `adjacent` are one model): a structural check, no training.
- precision (precision.*): rounding the trained dense model's matmuls to the coarsest format searched must
  move its validation bpb by >= PRECISION_SHIFT (relative): else every format looks free at this size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.device import resolve_device
from nas.evaluation.data import TaskSpec, load_corpus
from nas.evaluation.proxy import ProxySpec, train_proxy
from nas.evaluation.scoring import evaluate, quality
from nas.model.config import FORMATS, knobs_in
from nas.study.space import SearchSpec

RECALL_MARGIN = 0.15
CONTEXT_GAIN = 0.03
CAPACITY_RATIO = 0.85
PRECISION_SHIFT = 0.002
COMPARE_DEPTH = 12
SHARING_KNOBS = knobs_in("sharing")
ATTENTION_KNOBS = knobs_in("attention")
CAPACITY_KNOBS = knobs_in("heads", "sharing")
_COARSENESS = {fmt: rank for rank, fmt in enumerate(FORMATS)}  # fp32 < bf16 < fp16 < fp8_e4m3 < fp8_e5m2


@dataclass
class Adequacy:
    """The outcome: passed, a one-line summary, the setting that would fix a failure, every check, and the dense
    baseline's final quality (one seed of the proxy's seed noise, nas.evaluation.noise)."""

    passed: bool
    summary: str
    fix: str | None
    checks: list[dict[str, Any]] = field(default_factory=list)
    quality: float | None = None
    noise: dict[str, Any] | None = None  # nas.evaluation.noise.SeedNoise as a dict: the proxy's seed noise on the task

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(name: str, measured: float, threshold: float, passed: bool, meaning: str) -> dict[str, Any]:
    return {"name": name, "measured": round(measured, 6), "threshold": round(threshold, 6), "passed": bool(passed),
            "meaning": meaning}


def largest_window(spec: SearchSpec, proxy: ProxySpec) -> int:
    """The largest window the space can give a proxy trial (proxy units)."""
    windows = [max(v for v in p.extremes() if v is not None) for p in spec.params if p.name == "window"]
    windows.append(spec.fixed.get("window", 0))
    return int(max(windows)) or proxy.seq_len


def attention_checks(metrics: dict[str, float], spec: SearchSpec, proxy: ProxySpec, task: TaskSpec
                     ) -> tuple[list[dict[str, Any]], str]:
    """Recall beyond the largest window and loss falling with context; and the fix if they fail."""
    w = largest_window(spec, proxy)
    fix = (f"proxy.seq_len={4 * w} or more (4x the largest window, {w}) and a longer proxy.budget_tokens "
           f"(e.g. {2 * proxy.budget_tokens}), or proxy=small")
    if not task.uses_mqar:
        return [_check("recall beyond the largest window", 0.0, 1.0, False,
                       f"task {task.name!r} has no recall probe")], "task=long_range"
    far = [v for k, v in metrics.items() if k.startswith("mqar_acc_dist") and int(k[len("mqar_acc_dist"):]) >= w]
    chance = 1.0 / task.mqar.num_pairs
    recall = sum(far) / len(far) if far else 0.0
    checks = [_check(f"recall at distances >= {w} (largest window)", recall, chance + RECALL_MARGIN,
                     bool(far) and recall >= chance + RECALL_MARGIN,
                     f"dense MQAR accuracy beyond every window searched; chance {chance:.2f}"
                     + ("" if far else f"; no query is that far at seq_len={proxy.seq_len}"))]
    if "bpb_late" in metrics:
        early = metrics["bpb_pos0"]
        checks.append(_check("late-position bpb / first-8 bpb", metrics["bpb_late"] / early, 1.0 - CONTEXT_GAIN,
                             metrics["bpb_late"] <= (1.0 - CONTEXT_GAIN) * early,
                             "the dense model's loss falls with context"))
    return checks, fix


def unigram_entropy(data: np.ndarray) -> float:
    """Bits per byte of the byte-frequency (order-0) model of `data`."""
    counts = np.bincount(np.asarray(data), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def capacity_check(metrics: dict[str, float], task: TaskSpec, proxy: ProxySpec, cache_dir: Any
                   ) -> tuple[dict[str, Any], str]:
    """Dense bpb well below the unigram entropy of the validation bytes."""
    entropy = unigram_entropy(load_corpus(task.corpus, val_pct=task.val_pct, cache_dir=cache_dir).val)
    bpb = metrics.get("bpb", math.inf)
    return (_check("dense bpb / unigram entropy", bpb / entropy, CAPACITY_RATIO, bpb <= CAPACITY_RATIO * entropy,
                   f"the dense model has learned beyond byte frequencies ({entropy:.3f} bits/byte)"),
            f"proxy.budget_tokens={2 * proxy.budget_tokens} or proxy=small")


def _sharing_configs(spec: SearchSpec) -> list[dict[str, Any]]:
    """Every assignment of the space's sharing parameters whose conditions hold (grid values, file order)."""
    configs: list[dict[str, Any]] = [{}]
    for p in spec.params:
        if p.name in SHARING_KNOBS:
            configs = [c if not p.active(c) else {**c, p.name: v} for c in configs for v in
                       (p.grid_values() if p.active(c) else [None])]
    return [dict(t) for t in {tuple(sorted(c.items())) for c in configs if c}]


def _structure(knobs: dict[str, Any], proxy: ProxySpec, n_layers: int) -> tuple:
    """Which weights each layer position uses: the model's sharing structure at a depth."""
    from nas.evaluation.proxy import proxy_sizes
    from nas.knobs import carry
    from nas.model.sharing import sublayer_maps

    arch = carry(knobs, {**proxy_sizes(proxy), "n_layers": n_layers}, what=f"{n_layers} layers")
    return (*map(tuple, sublayer_maps(arch)), arch.sharing == "ffn_block_diag")


def depth_check(spec: SearchSpec, proxy: ProxySpec) -> tuple[dict[str, Any], str]:
    """Sharing configurations that differ at COMPARE_DEPTH layers must differ at the proxy's depth."""
    configs = [spec.knobs({**c}) for c in _sharing_configs(spec)]
    pairs = [(a, b) for i, a in enumerate(configs) for b in configs[i + 1:]
             if _structure(a, proxy, COMPARE_DEPTH) != _structure(b, proxy, COMPARE_DEPTH)]
    merged = [(a, b) for a, b in pairs if _structure(a, proxy, proxy.n_layers) == _structure(b, proxy, proxy.n_layers)]
    example = f"; e.g. {merged[0][0]} and {merged[0][1]} are one model" if merged else ""
    depth = next((n for n in (4, 6, 8, 12) if not any(_structure(a, proxy, n) == _structure(b, proxy, n)
                                                      for a, b in pairs)), COMPARE_DEPTH)
    return (_check(f"sharing configurations merged at {proxy.n_layers} layers", len(merged), 0, not merged,
                   f"{len(merged)} of {len(pairs)} pairs that differ at {COMPARE_DEPTH} layers are the same model at "
                   f"the proxy's depth{example}"),
            f"proxy.n_layers={depth} (proxy=small has 4)")


def coarsest_format(spec: SearchSpec) -> str | None:
    """The coarsest numeric format any precision.* parameter of the space can choose."""
    chosen = [c for p in spec.params if p.name.startswith("precision.") and p.name != "precision.adaptive_format"
              for c in p.choices if c in _COARSENESS]
    chosen += [c for p in spec.params if p.name == "precision.adaptive_format" for c in p.choices]
    return max(chosen, key=_COARSENESS.__getitem__) if chosen else None


def precision_check(model: Any, val_set: list, base_bpb: float, fmt: str, device: Any) -> dict[str, Any]:
    """Validation bpb of the trained model with its attention and FFN matmuls rounded to `fmt`."""
    from nas.model.transformer import FeedForward, FormatLinear

    for module in model.modules():
        if isinstance(module, (FormatLinear, FeedForward)):
            module.fmt = fmt
    shifted = evaluate(model, val_set, device)["bpb"]
    shift = (shifted - base_bpb) / base_bpb
    return _check(f"bpb shift when rounded to {fmt}", shift, PRECISION_SHIFT, shift >= PRECISION_SHIFT,
                  f"the proxy's loss moves with the coarsest format searched ({base_bpb:.4f} -> {shifted:.4f} bpb)")


def check_adequacy(spec: SearchSpec, proxy: ProxySpec, task: TaskSpec, *, budget_tokens: int | None = None,
                   seed: int = 0, threads: int = 1, device: str = "auto", cache_dir: str | Path | None = None,
                   progress: bool = False, noise: bool = True, noise_root: Path | None = None) -> Adequacy:
    """Train the space's dense baseline at the proxy and check that it can resolve the space's knobs; with
    `noise`, also the proxy's seed noise (nas.evaluation.noise: cached under `noise_root`, else the other seeds
    trained in parallel with this one)."""
    from nas.evaluation.noise import NoiseJob

    job = NoiseJob(spec.knobs(dict(spec.baseline)), proxy, task, budget_tokens, seed, threads=threads, device=device,
                   cache_dir=cache_dir, root=noise_root, train=noise) if noise else None
    try:
        found = _run_checks(spec, proxy, task, budget_tokens, seed, threads, device, cache_dir, progress)
        if job is not None:
            measured = job.finish(found.quality)
            found.noise = measured.to_dict() if measured is not None else None
    finally:
        if job is not None:
            job.close()
    return found


def _run_checks(spec: SearchSpec, proxy: ProxySpec, task: TaskSpec, budget_tokens: int | None, seed: int,
                threads: int, device: str, cache_dir: str | Path | None, progress: bool) -> Adequacy:
    """check_adequacy's checks, from one training run of the dense baseline at `seed`."""
    from nas.evaluation.data import TaskData

    names = {p.name for p in spec.params} | set(spec.fixed)
    built: list[Any] = []
    reports = list(train_proxy(spec.knobs(dict(spec.baseline)), proxy, task, budget_tokens=budget_tokens, seed=seed,
                               threads=threads, device=device, progress=progress, cache_dir=cache_dir,
                               model_sink=built.append))
    metrics = reports[-1].metrics
    checks: list[dict[str, Any]] = []
    fixes: list[str] = []
    if names & set(ATTENTION_KNOBS):
        found, fix = attention_checks(metrics, spec, proxy, task)
        checks += found
        fixes += [fix] if not all(c["passed"] for c in found) else []
    if names & set(CAPACITY_KNOBS):
        if not task.uses_lm:
            checks.append(_check("dense bpb / unigram entropy", 0.0, CAPACITY_RATIO, False, "the task has no text"))
            fixes.append("task=capacity")
        else:
            found_one, fix = capacity_check(metrics, task, proxy, cache_dir)
            checks.append(found_one)
            fixes += [fix] if not found_one["passed"] else []
    if names & {"sharing", "sharing_scope"}:
        found_one, fix = depth_check(spec, proxy)
        checks.append(found_one)
        fixes += [fix] if not found_one["passed"] else []
    fmt = coarsest_format(spec)
    if fmt is not None and fmt != "fp32" and task.uses_lm:
        data = TaskData(task, proxy.seq_len, cache_dir=cache_dir)
        found_one = precision_check(built[0], data.val_set(proxy.eval_batches, proxy.batch_size), metrics["bpb"], fmt,
                                    resolve_device(device))
        checks.append(found_one)
        fixes += [] if found_one["passed"] else ["a larger or longer-trained proxy (proxy=small), or coarser formats"]
    passed = all(c["passed"] for c in checks)
    failed = [c for c in checks if not c["passed"]]
    if passed:
        detail = "; ".join(f"{c['name']} {c['measured']:.3f} (needs {c['threshold']:.3f})" for c in checks)
        summary = f"proxy {proxy.name!r} can resolve the {spec.name} knobs on task {task.name!r}: {detail}"
    else:
        c = failed[0]
        summary = (f"proxy {proxy.name!r} cannot resolve the {spec.name} knobs on task {task.name!r}: {c['name']} "
                   f"is {c['measured']:.3f}, needs {c['threshold']:.3f} ({c['meaning']})")
    return Adequacy(passed, summary, "; ".join(dict.fromkeys(fixes)) or None, checks, quality(reports[-1], task))
