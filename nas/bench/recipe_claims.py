"""The efficient-transformer recipe's four claims, checked against studies of `nas` itself.

Each claim has a small finite search space (benchmarks/spaces/claims/<key>.yaml): the dense baseline and the
recipe's configurations. `benchmarks/claims.py` trains every configuration once per seed with the real search
(one study per claim and seed, nas.bench.replay.record), then this module reads the studies back and asks the
export policy the claim implies, `policy=min_compute min_quality_ratio=<the claim's quality bound>`, per seed.

Figures and their kind:
- quality: the proxy's task objective (measured); quality ratio = dense quality / quality (1.0 = dense).
- FLOPs and parameters: exact counts of the target with the picked knobs (nas.cost.counts).
- memory and speed: the cost model (nas.cost.memory, nas.cost.roofline: stated assumptions in those modules),
  not a measurement. A modelled figure that misses the claim is a FAIL (by the model); one that meets it is
  NOT MEASURABLE HERE (the model agrees; only the hardware can confirm it).
Precision baselines: speed and memory are compared with the dense model in bf16 everywhere (today's standard
training format), not with fp32, which would flatter any reduced format by the tensor-core rate alone.
A claim holds when the mean over seeds meets it; the spread (min..max) is reported beside it.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nas.cost.report import Coster
from nas.evaluation.reference import describe
from nas.export.front import Point, Policy, StudyPoints, load_points, select
from nas.model.config import ArchConfig
from nas.study.store import Store
from nas.study.view import same_config

PASS, FAIL, UNMEASURABLE = "PASS", "FAIL", "NOT MEASURABLE HERE"
BF16_DENSE = {"precision": {"attention": "bf16", "ffn": "bf16", "embed": "bf16"}}
HARDWARE = ("h100_sxm", "h200")


@dataclass(frozen=True)
class Claim:
    """One claim of the recipe: its space file (benchmarks/spaces/claims/<key>.yaml) and its quality bound."""

    key: str
    title: str
    claimed: str
    min_quality_ratio: float
    overrides: tuple[str, ...] = ()  # Hydra overrides of the claim's studies (e.g. proxy.n_heads=8)


CLAIMS = (
    Claim("sparse_attention", "Dynamic sparse attention (window + 16 global tokens, per-head gate)",
          "forward compute -58% at >= 97% of dense quality", 0.97),
    Claim("sharing", "Structured sharing (FFN 4x4 block-diagonal across adjacent layers; QKV in groups of 8 heads)",
          "parameters -49% at <= 3.2% quality loss", 1 / 1.032, ("proxy.n_heads=8",)),
    Claim("precision", "Adaptive mixed precision (attention bf16; FFN fp8 e5m2 once stable, else fp16)",
          "training memory -40% and 2.3x training speed (H100/H200)", 0.99),
    Claim("combined", "All three combined",
          "dense quality at <= 40% of the dense model's training compute", 1.0, ("proxy.n_heads=8",)),
)
CLAIMED = {"sparse_attention": 0.58, "sharing": 0.49, "precision_memory": 0.40, "precision_speed": 2.3,
           "combined": 0.40}


def study_name(claim: Claim, seed: int) -> str:
    """The study of one claim and seed."""
    return f"claim-{claim.key}-s{seed}"


@dataclass(frozen=True)
class Spread:
    """A figure over seeds: mean, min and max."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    def text(self, fmt: str = "{:.3f}") -> str:
        """'mean [min..max] (n seeds)'."""
        lo, hi = min(self.values), max(self.values)
        return f"{fmt.format(self.mean)} [{fmt.format(lo)}..{fmt.format(hi)}] ({len(self.values)} seeds)"


@dataclass(frozen=True)
class ClaimResult:
    """One claim's verdict with its figures."""

    claim: Claim
    measured: str
    status: str
    reason: str
    proxy: str
    target: str
    picks: tuple[str, ...]  # the configuration picked per seed
    points: list[dict[str, Any]] = field(default_factory=list)  # every configuration per seed, for the plots


@dataclass(frozen=True)
class SeedStudy:
    """One claim's study for one seed: its points, the dense quality and the policy's pick."""

    seed: int
    points: StudyPoints
    dense: float
    pick: Point

    def ratio(self, p: Point) -> float:
        """Quality ratio of a point: dense quality / its quality (1.0 = as good as dense)."""
        return self.dense / p.quality if p.quality > 0 else math.inf


def knobs_text(params: dict[str, Any]) -> str:
    """A trial's searched parameters, compactly."""
    return " ".join(f"{k}={v}" for k, v in params.items()) or "dense"


def seed_studies(store: Store, claim: Claim, seeds: Sequence[int]) -> list[SeedStudy]:
    """Each seed's study read back with the claim's min_compute pick; ValueError naming a missing study."""
    out = []
    for seed in seeds:
        sp = load_points(store, study_name(claim, seed))
        dense = sp.dense_quality()
        if dense is None:
            raise ValueError(f"study {sp.study.name!r} has no COMPLETE dense baseline: run benchmarks/claims.py again")
        out.append(SeedStudy(seed, sp, dense, select(sp, Policy("min_compute",
                                                                min_quality_ratio=claim.min_quality_ratio))))
    return out


class Costs:
    """The claim's target on each hardware profile, with ratios to the dense model in fp32 or bf16."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.target = config["target"]
        self.costers = {hw: Coster(self.target, hw) for hw in HARDWARE}
        self.bf16 = {hw: c.estimate(BF16_DENSE) for hw, c in self.costers.items()}
        self._reports: dict[tuple[str, str], Any] = {}

    def of(self, p: Point, hardware: str = "h100_sxm") -> Any:
        """The cost report of a point's knobs at the target (each point and hardware costed once)."""
        key = (json.dumps(p.trial.arch, sort_keys=True), hardware)  # trial numbers differ between seed studies
        if key not in self._reports:
            self._reports[key] = self.costers[hardware].estimate(ArchConfig.from_dict(p.trial.arch))
        return self._reports[key]

    def forward_ratio(self, p: Point) -> float:
        r = self.of(p)
        return r.flops.forward_total / r.baseline_flops.forward_total

    def speedup_vs_bf16(self, p: Point, hardware: str) -> float:
        return self.bf16[hardware].time.total / self.of(p, hardware).time.total

    def memory_ratio_vs_bf16(self, p: Point) -> float:
        return self.of(p).memory.total / self.bf16["h100_sxm"].memory.total


def _modelled_status(meets: bool, what: str) -> tuple[str, str]:
    if not meets:
        return FAIL, f"by the cost model, {what} fall short of the claim"
    return UNMEASURABLE, f"by the cost model, {what} meet the claim; only the hardware can confirm it"


def context_reaching(costs: Costs, p: Point, reduction: float, limit: int = 1 << 20) -> int | None:
    """The shortest context (32k doublings up to `limit`) at which the point's knobs, windows carried as a share of
    the context, cut the target's forward FLOPs by `reduction`; None if none does."""
    base = dict(costs.target)
    seq = base["arch"]["seq_len"]
    while seq <= limit:
        target = {**base, "name": f"{base['name']}@{seq}", "arch": {**base["arch"], "seq_len": seq},
                  "workload": {**base["workload"], "seq_len": seq}}
        r = Coster(target, "h100_sxm").estimate(ArchConfig.from_dict(p.trial.arch))
        if 1 - r.flops.forward_total / r.baseline_flops.forward_total >= reduction:
            return seq
        seq *= 2
    return None


def _plot_points(studies: list[SeedStudy], compute: Callable[[Point], float]) -> list[dict[str, Any]]:
    return [{"seed": s.seed, "config": knobs_text(p.trial.params), "compute": compute(p),
             "quality_ratio": s.ratio(p), "picked": p is s.pick} for s in studies for p in s.points.points]


def _provenance(studies: list[SeedStudy]) -> tuple[str, str]:
    config = studies[0].points.study.config
    proxy = {**config["proxy"], "budget_tokens": config.get("budget_tokens") or config["proxy"].get("budget_tokens")}
    task = config.get("task", {}).get("name", "?")
    return f"{describe(proxy)}; task {task}", str(config["target"].get("name", "?"))


def _recipe(studies: list[SeedStudy], params: dict[str, Any]) -> list[Point]:
    """Each seed's point of the given configuration (ValueError when a seed lacks it)."""
    found = []
    for s in studies:
        match = [p for p in s.points.points if same_config(p.params, params)]
        if not match:
            raise ValueError(f"study {s.points.study.name!r} has no COMPLETE trial {knobs_text(params)}")
        found.append(match[0])
    return found


def sparse_attention(claim: Claim, studies: list[SeedStudy]) -> ClaimResult:
    """Claim 1: forward FLOPs saved by the cheapest configuration keeping >= 97% of dense quality."""
    costs = Costs(studies[0].points.study.config)
    cut = Spread(tuple(1 - costs.forward_ratio(s.pick) for s in studies))
    ratio = Spread(tuple(s.ratio(s.pick) for s in studies))
    proxy, target = _provenance(studies)
    widest = max((s.pick for s in studies if s.pick.trial.params.get("attention") == "local_global"),
                 key=lambda p: p.trial.params["window"], default=None)
    reach = context_reaching(costs, widest, CLAIMED[claim.key]) if widest is not None else None
    status = PASS if cut.mean >= CLAIMED[claim.key] else FAIL
    reason = (f"picked configurations keep quality ratio {ratio.text()}; " +
              (f"the widest picked window ({knobs_text(widest.trial.params)}) reaches -58% from a "
               f"{reach:,}-token context" if reach and widest is not None else
               "no picked sparse configuration reaches -58% at any context up to 1M tokens" if widest else
               "no sparse configuration keeps 97% of dense quality"))
    return ClaimResult(claim, f"forward compute -{100 * cut.mean:.1f}% [{100 * min(cut.values):.1f}.."
                       f"{100 * max(cut.values):.1f}] ({len(cut.values)} seeds)", status, reason, proxy, target,
                       tuple(knobs_text(s.pick.trial.params) for s in studies),
                       _plot_points(studies, lambda p: costs.forward_ratio(p)))


def sharing(claim: Claim, studies: list[SeedStudy]) -> ClaimResult:
    """Claim 2: unique parameters saved by the cheapest configuration losing <= 3.2% quality."""
    cut = Spread(tuple(1 - s.pick.primary for s in studies))
    recipe = _recipe(studies, {"sharing": "ffn_block_diag", "kv_heads": 1, "group_share": "qkv"})
    loss = Spread(tuple(1 - s.ratio(p) for s, p in zip(studies, recipe)))
    proxy, target = _provenance(studies)
    status = PASS if cut.mean >= CLAIMED[claim.key] else FAIL
    reason = (f"the full recipe (both kinds of sharing) saves {100 * (1 - recipe[0].primary):.1f}% of the target's "
              f"parameters at quality loss {loss.text('{:.3f}')}")
    return ClaimResult(claim, f"parameters -{100 * cut.mean:.1f}% [{100 * min(cut.values):.1f}.."
                       f"{100 * max(cut.values):.1f}] ({len(cut.values)} seeds)", status, reason, proxy, target,
                       tuple(knobs_text(s.pick.trial.params) for s in studies),
                       _plot_points(studies, lambda p: p.primary))


def precision(claim: Claim, studies: list[SeedStudy]) -> ClaimResult:
    """Claim 3: the recipe's assignment, its modelled memory and speed against bf16 and its measured quality."""
    costs = Costs(studies[0].points.study.config)
    recipe = _recipe(studies, {"precision.attention": "bf16", "precision.ffn": "adaptive",
                               "precision.adaptive_format": "fp8_e5m2"})
    ratio = Spread(tuple(s.ratio(p) for s, p in zip(studies, recipe)))
    memory_cut = 1 - costs.memory_ratio_vs_bf16(recipe[0])
    speed = {hw: costs.speedup_vs_bf16(recipe[0], hw) for hw in HARDWARE}
    proxy, target = _provenance(studies)
    measured = (f"memory -{100 * memory_cut:.1f}% (model), speed " +
                ", ".join(f"{v:.2f}x on {hw}" for hw, v in speed.items()) +
                f" (model), vs dense bf16; quality ratio {ratio.text()} (measured)")
    if ratio.mean < claim.min_quality_ratio:
        status, reason = FAIL, f"quality ratio below {claim.min_quality_ratio} on the proxy"
    else:
        meets = memory_cut >= CLAIMED["precision_memory"] and min(speed.values()) >= CLAIMED["precision_speed"]
        status, reason = _modelled_status(meets, "memory and speed")
    fp32 = costs.of(recipe[0])
    reason += (f"; vs dense fp32 the model gives memory -{100 * (1 - fp32.memory_ratio):.1f}%, speed "
               f"{1 / fp32.time_ratio:.1f}x (fp32 runs at the non-tensor-core rate)")
    return ClaimResult(claim, measured, status, reason, proxy, target,
                       tuple(knobs_text(s.pick.trial.params) for s in studies),
                       _plot_points(studies, lambda p: 1 / costs.speedup_vs_bf16(p, "h100_sxm")))


def combined(claim: Claim, studies: list[SeedStudy]) -> ClaimResult:
    """Claim 4: modelled training time (vs dense bf16) of the cheapest configuration as good as dense."""
    costs = Costs(studies[0].points.study.config)
    time = Spread(tuple(1 / costs.speedup_vs_bf16(s.pick, "h100_sxm") for s in studies))
    flops = Spread(tuple(costs.of(s.pick).flops_ratio for s in studies))
    ratio = Spread(tuple(s.ratio(s.pick) for s in studies))
    proxy, target = _provenance(studies)
    measured = (f"training time {time.text()} of dense bf16 (model), FLOPs {flops.text()} of dense (exact); "
                f"quality ratio {ratio.text()}")
    if all(s.pick.trial.params.get("attention") == "dense" for s in studies):
        recipes = [p for p in studies[0].points.points if p.trial.params.get("attention") != "dense"]
        best = max(recipes, key=lambda p: statistics.fmean(s.ratio(q) for s in studies for q in s.points.points
                                                            if same_config(q.params, p.params)))
        kept = Spread(tuple(s.ratio(q) for s in studies for q in s.points.points if same_config(q.params, best.params)))
        status, reason = FAIL, (f"no recipe configuration reaches dense quality on the proxy in any seed; the best, "
                                f"{knobs_text(best.trial.params)}, keeps quality ratio {kept.text()} at training time "
                                f"{1 / costs.speedup_vs_bf16(best, 'h100_sxm'):.2f}x dense bf16 (model) and FLOPs "
                                f"{costs.of(best).flops_ratio:.3f}x dense")
    else:
        status, reason = _modelled_status(time.mean <= CLAIMED[claim.key], "training time")
    return ClaimResult(claim, measured, status, reason, proxy, target,
                       tuple(knobs_text(s.pick.trial.params) for s in studies),
                       _plot_points(studies, lambda p: 1 / costs.speedup_vs_bf16(p, "h100_sxm")))


EVALUATORS: dict[str, Callable[[Claim, list[SeedStudy]], ClaimResult]] = {
    "sparse_attention": sparse_attention, "sharing": sharing, "precision": precision, "combined": combined}
COMPUTE_AXIS = {"sparse_attention": "forward FLOPs / dense", "sharing": "unique parameters / dense",
                "precision": "modelled step time / dense bf16 (H100)",
                "combined": "modelled step time / dense bf16 (H100)"}


def evaluate(store: Store, claim: Claim, seeds: Sequence[int]) -> ClaimResult:
    """One claim's verdict from its stored studies."""
    return EVALUATORS[claim.key](claim, seed_studies(store, claim, seeds))


def markdown(results: Sequence[ClaimResult]) -> str:
    """The report table: claimed and measured figures, where measured, the verdict and why."""
    rows = ["| # | claim | claimed | measured | proxy -> target | picked per seed | verdict | why |",
            "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(results, 1):
        rows.append(f"| {i} | {r.claim.title} | {r.claim.claimed} | {r.measured} | {r.proxy} -> {r.target} | "
                    f"{'; '.join(r.picks)} | **{r.status}** | {r.reason} |")
    return "\n".join(rows)


def summary_line(results: Sequence[ClaimResult]) -> str:
    """`claims passed=N failed=N unmeasurable=N`."""
    count = lambda s: sum(r.status == s for r in results)  # noqa: E731
    return f"claims passed={count(PASS)} failed={count(FAIL)} unmeasurable={count(UNMEASURABLE)}"
