"""The recipe's four claims as the seed states them, costed at the real targets (conf/target/*.yaml).

The literal recipe in target tokens, per claim:
  1 sparse attention: every layer local, a 512-token causal window, the first 16 positions as global tokens, the
    per-head dynamic gate;
  2 sharing: FFN split in 4x4 sub-blocks, adjacent layers sharing the diagonal ones (ffn_block_diag, ffn_blocks=4),
    and Q, K, V shared in groups of 8 heads (group_share=qkv, kv_heads = n_heads / 8; a model with fewer than 8 heads
    shares them all in one group);
  3 precision: attention bf16, FFN fp8 e5m2 once stable (ffn=adaptive, costed at its fp8 steady state), embedding
    and LM head bf16 (the recipe does not name them: kept as the bf16 baseline's);
  4 all three at once.
Only the compute side is judged here, by the cost model (nas.cost): FLOPs and parameters are exact counts, memory
and time its roofline model. Two baselines: `dense`, the ratios nas.cost reports (the target's sizes with every
knob at its default: multi-head attention, every layer dense, fp32; for memory and speed the same model in bf16,
as nas.bench.recipe_claims compares), and `published`, the released model (the target's `published:` knobs: GQA,
Mistral's window, Gemma 3's local:global layers) against the recipe applied over it (the recipe replaces the
published knobs of the groups it sets: see TargetCosts.pairs).
The quality side is what the stored proxy studies measured (nas.bench.recipe_claims), nearest to the literal recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nas.bench.recipe_claims import CLAIMED, CLAIMS, Claim, SeedStudy, Spread, knobs_text, seed_studies
from nas.cost.report import Coster, CostReport
from nas.cost.target import load_target
from nas.model.config import KNOBS
from nas.profiles import read_profile
from nas.study.store import Store
from nas.study.view import same_config

TARGETS = ("llama3.2_1b_32k", "llama3.2_1b_128k", "llama3.1_8b_32k", "llama3.1_8b_128k", "mistral_7b_32k",
           "qwen3_1.7b_32k", "qwen3_1.7b_128k", "gemma3_1b_32k")
HARDWARE = ("h100_sxm", "h200")
WINDOW, GLOBAL_TOKENS, HEADS_PER_GROUP, FFN_BLOCKS = 512, 16, 8, 4
SPARSE = {"attention": "local_global", "window": WINDOW, "global_tokens": GLOBAL_TOKENS, "gate": "dynamic"}
PRECISION = {"precision": {"attention": "bf16", "ffn": "adaptive", "adaptive_format": "fp8_e5m2", "embed": "bf16"}}
BF16 = {"precision": {"attention": "bf16", "ffn": "bf16", "embed": "bf16"}}
MET, NOT_MET = "MET", "NOT MET"


def sharing_knobs(n_heads: int) -> dict[str, Any]:
    """Claim 2's knobs at a model of `n_heads` heads: FFN 4x4 block-diagonal sharing, Q/K/V in groups of 8 heads."""
    return {"sharing": "ffn_block_diag", "ffn_blocks": FFN_BLOCKS, "kv_heads": max(1, n_heads // HEADS_PER_GROUP),
            "group_share": "qkv"}


def recipe_knobs(claim: str, n_heads: int) -> dict[str, Any]:
    """The literal recipe of one claim (sparse_attention, sharing, precision, combined) in target units."""
    parts = {"sparse_attention": SPARSE, "sharing": sharing_knobs(n_heads), "precision": PRECISION}
    if claim == "combined":
        return {k: v for part in parts.values() for k, v in part.items()}
    if claim not in parts:
        raise ValueError(f"claim={claim!r} is unknown: valid are {', '.join([*parts, 'combined'])}")
    return dict(parts[claim])


def published_knobs(target: str) -> dict[str, Any]:
    """The knobs the released model ships (the target's `published:` mapping; none: the dense model)."""
    return dict(read_profile("target", target)[1].get("published") or {})


@dataclass(frozen=True)
class Figure:
    """One quantity a claim names, modelled at one target: recipe / baseline (or baseline / recipe for a speed-up)."""

    claim: str
    target: str
    context: int
    regime: str  # training, inference, or both (parameters)
    quantity: str
    bound: float  # the claimed ratio: at most (`at_most`) or at least it
    at_most: bool
    dense: float  # vs the dense baseline of the target's sizes
    published: float  # vs the released model with its own knobs

    def meets(self, value: float) -> bool:
        """Whether a modelled ratio meets the claimed bound."""
        return value <= self.bound if self.at_most else value >= self.bound

    @property
    def verdict(self) -> str:
        """MET or NOT MET against the dense baseline."""
        return MET if self.meets(self.dense) else NOT_MET


class TargetCosts:
    """One target's costers (per hardware) and the recipe of each claim over the dense and the published model."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.costers = {hw: Coster(target, hw) for hw in HARDWARE}
        self.dense = self.costers["h100_sxm"].dense
        self.published = published_knobs(target)
        self._cache: dict[tuple[str, str], CostReport] = {}

    def report(self, knobs: Mapping[str, Any], hardware: str = "h100_sxm") -> CostReport:
        """The cost report of knobs in target units (each set and hardware costed once)."""
        key = (repr(sorted(knobs.items())), hardware)
        if key not in self._cache:
            self._cache[key] = self.costers[hardware].estimate(dict(knobs))
        return self._cache[key]

    def pairs(self, claim: str, base: Mapping[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """(recipe, baseline) knobs over the dense model and over the published one (the recipe replaces the published
        knobs of the groups it sets: Gemma 3's local:global layout and Mistral's window go, Llama's GQA stays beside
        sparse attention and is replaced by the QKV groups of the sharing claim)."""
        recipe = recipe_knobs(claim, self.dense.n_heads)
        replaced = {KNOBS[k].group for k in recipe}
        replaced |= {"kernel"} if "attention" in replaced else set()  # a new attention takes its own kernel knobs
        kept = {k: v for k, v in self.published.items() if KNOBS[k].group not in replaced}
        return {"dense": (recipe, dict(base)), "published": ({**kept, **recipe}, {**self.published, **base})}

    def ratio(self, claim: str, of: Callable[[CostReport], float], hardware: str = "h100_sxm",
              base: Mapping[str, Any] | None = None, inverse: bool = False) -> dict[str, float]:
        """of(recipe) / of(baseline) (inverse: baseline / recipe) over each baseline."""
        out = {}
        for name, (recipe, baseline) in self.pairs(claim, base or {}).items():
            r, b = of(self.report(recipe, hardware)), of(self.report(baseline, hardware))
            out[name] = b / r if inverse else r / b
        return out


def _forward(r: CostReport) -> float:
    return r.flops.forward_total


def _prefill_flops(r: CostReport) -> float:
    return sum(r.inference.prefill.flops.values())


def target_figures(target: str, claimed: Mapping[str, float] = CLAIMED) -> list[Figure]:
    """Every quantity the claims name at one target, against the claimed figures (CLAIMED: the cuts and speed-up)."""
    c = TargetCosts(target)
    ctx = c.dense.seq_len
    out: list[Figure] = []

    def add(claim: str, regime: str, quantity: str, bound: float, ratios: dict[str, float], at_most: bool = True):
        out.append(Figure(claim, target, ctx, regime, quantity, bound, at_most, ratios["dense"], ratios["published"]))

    sparse = 1 - claimed["sparse_attention"]
    add("sparse_attention", "training", "forward FLOPs (exact causal pairs)", sparse,
        c.ratio("sparse_attention", _forward))
    add("sparse_attention", "inference", "prefill FLOPs (as the kernels compute them)", sparse,
        c.ratio("sparse_attention", _prefill_flops))
    add("sparse_attention", "inference", "decode time per token, h100_sxm (model)", sparse,
        c.ratio("sparse_attention", lambda r: r.inference.decode.total))
    add("sharing", "both", "unique parameters", 1 - claimed["sharing"],
        c.ratio("sharing", lambda r: r.params["unique"]))
    add("precision", "training", "training memory vs bf16 (model)", 1 - claimed["precision_memory"],
        c.ratio("precision", lambda r: r.memory.total, base=BF16))
    for hw in HARDWARE:
        add("precision", "training", f"training speed-up vs bf16, {hw} (model)", claimed["precision_speed"],
            c.ratio("precision", lambda r: r.time.total, hw, BF16, inverse=True), at_most=False)
    add("combined", "training", "training FLOPs (exact)", claimed["combined"],
        c.ratio("combined", lambda r: r.flops.step))
    for hw in HARDWARE:
        add("combined", "training", f"training time vs bf16, {hw} (model)", claimed["combined"],
            c.ratio("combined", lambda r: r.time.total, hw, BF16))
    return out


def recipe_line(target: str) -> str:
    """The recipe's head grouping and the published knobs at one target, for the report."""
    dense = load_target(target)[0]
    kv = sharing_knobs(dense.n_heads)["kv_heads"]
    group = dense.n_heads // kv
    pub = ", ".join(f"{k}={v}" for k, v in published_knobs(target).items()) or "none"
    return (f"| {target} | {dense.n_layers} x {dense.d_model}, {dense.n_heads} heads | "
            f"{kv} x {group} heads{'' if group == HEADS_PER_GROUP else ' (fewer than 8 heads: one group of all)'} | "
            f"{pub} |")


# ---- the quality side: what the stored proxy studies measured -----------------------------------------------------


MEASURED_AS: dict[str, dict[str, Any]] = {  # the stored studies' trial of the literal recipe, claims 2 and 3
    "sharing": {"sharing": "ffn_block_diag", "kv_heads": 1, "group_share": "qkv"},  # 1 of the proxy's 8 heads
    "precision": {"precision.attention": "bf16", "precision.ffn": "adaptive", "precision.adaptive_format": "fp8_e5m2"}}


def _spread(studies: Sequence[SeedStudy], params: Mapping[str, Any]) -> tuple[str, Spread] | None:
    found = [(s, p) for s in studies for p in s.points.points if same_config(p.params, dict(params))]
    if len(found) < len(studies):
        return None
    return knobs_text(found[0][1].trial.params), Spread(tuple(s.ratio(p) for s, p in found))


def _windows(studies: Sequence[SeedStudy]) -> list[int]:
    return sorted({p.trial.params["window"] for p in studies[0].points.points if "window" in p.trial.params})


def quality_side(store: Store, seeds: Sequence[int], contexts: Sequence[int]) -> list[str]:
    """Per claim, the measured configuration nearest to the literal recipe and its quality ratio (dense quality /
    its quality, over seeds), or why the literal recipe was not measured."""
    lines = []
    for claim in CLAIMS:
        studies = seed_studies(store, claim, seeds)
        proxy = studies[0].points.study.config["proxy"]
        head = f"- **{claim.title}** (bound: quality ratio >= {claim.min_quality_ratio:.3f}) at proxy " \
               f"{proxy.get('name')} ({proxy.get('seq_len')} positions, {proxy.get('n_heads')} heads): "
        lines.append(head + _claim_quality(claim, studies, int(proxy["seq_len"]), contexts))
    return lines


def _claim_quality(claim: Claim, studies: Sequence[SeedStudy], proxy_seq: int, contexts: Sequence[int]) -> str:
    if claim.key in ("sparse_attention", "combined"):
        windows = _windows(studies)
        literal = ", ".join(f"{WINDOW * proxy_seq / ctx:g} at {ctx // 1024}k" for ctx in sorted(set(contexts)))
        base = {"sparse_attention": {"global_tokens": GLOBAL_TOKENS, "gate": "dynamic"}, "combined": {}}[claim.key]
        found = _spread(studies, {"attention": "local_global", "window": windows[0], **base})
        assert found is not None, "the claim's studies hold each of their windows"
        text, spread = found
        text += "; the space implies the recipe's other knobs" if claim.key == "combined" else ""
        return (f"not measured at the literal recipe: a 512-token window is, as a share of the context, window "
                f"{literal} of the proxy's {proxy_seq} positions (below the smallest measured, {windows[0]}, which "
                f"is {windows[0] * 32768 // proxy_seq:,} tokens at 32k; as a count of tokens 512 exceeds the proxy's "
                f"context: the dense model); 16 global tokens are a count, "
                f"{100 * GLOBAL_TOKENS / proxy_seq:.0f}% of the proxy's context. Nearest measured ({text}): quality "
                f"ratio {spread.text()}.")
    recipe = MEASURED_AS[claim.key]
    found = _spread(studies, recipe)
    if found is None:
        return "not measured at the literal recipe."
    text, spread = found
    meets = spread.mean >= claim.min_quality_ratio
    return (f"the literal recipe measured at the proxy's sizes ({text}): quality ratio {spread.text()}, "
            f"{'within' if meets else 'outside'} the bound.")


# ---- the report -------------------------------------------------------------------------------------------------


def markdown(figures: Sequence[Figure]) -> str:
    """A table per claim: target, context, regime, quantity claimed, quantity modelled, verdict; published beside."""
    parts = []
    for claim in CLAIMS:
        rows = [f"### {claim.title}: {claim.claimed}", "",
                "| target | context | regime | quantity | claimed | modelled vs dense | verdict | "
                "modelled vs published (recipe over it) | verdict |", "|---|---|---|---|---|---|---|---|---|"]
        for f in (f for f in figures if f.claim == claim.key):
            op = "<=" if f.at_most else ">="
            rows.append(f"| {f.target} | {f.context // 1024}k | {f.regime} | {f.quantity} | {op} {f.bound:.2f}x | "
                        f"{f.dense:.3f}x | **{f.verdict}** | {f.published:.3f}x | "
                        f"{MET if f.meets(f.published) else NOT_MET} |")
        parts.append("\n".join(rows))
    return "\n\n".join([overview(figures), *parts])


def overview(figures: Sequence[Figure]) -> str:
    """Claim x target: how many of the claim's quantities the recipe meets there (vs dense), and which."""
    targets = list(dict.fromkeys(f.target for f in figures))
    rows = ["| claim | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for claim in CLAIMS:
        cells = []
        for target in targets:
            mine = [f for f in figures if f.claim == claim.key and f.target == target]
            met = [f.quantity.split(" (")[0] for f in mine if f.verdict == MET]
            cells.append(f"{len(met)}/{len(mine)}" + (f" ({'; '.join(met)})" if met else ""))
        rows.append(f"| {claim.key} | " + " | ".join(cells) + " |")
    return "Quantities met per claim and target (vs dense):\n\n" + "\n".join(rows)


def summary_line(figures: Sequence[Figure]) -> str:
    """`claims_targets met=N not_met=N targets=N` over the quantities judged against the dense baseline."""
    met = sum(f.verdict == MET for f in figures)
    return (f"claims_targets met={met} not_met={len(figures) - met} "
            f"published_met={sum(f.meets(f.published) for f in figures)} targets={len({f.target for f in figures})}")
