"""Proxy fidelity per search space: a fixed panel ranked by the default proxy and by its reference.

    python benchmarks/fidelity.py --space sparse_attn --workers 2     # one space (the recorded runs)
    python benchmarks/fidelity.py                                      # report every space (trains nothing)
    python benchmarks/fidelity.py --space sparse_attn --min-context 32 # the same against context-growing rungs
    python benchmarks/fidelity.py --space precision --proxy-seeds 3    # the proxy's quality averaged over 3 seeds
    python benchmarks/fidelity.py --space precision --noise-seeds 2    # the dense baseline at 2 seeds, both sizes
    python benchmarks/fidelity.py --quick                              # smoke run of the machinery (tiny budgets)
    python benchmarks/fidelity.py --space sharing --kinds tiny_deep,tiny_deep:3,tiny_deep8  # kinds, wall per trial
    python benchmarks/fidelity.py --space sparse_attn --partial        # report what is recorded so far
    python benchmarks/fidelity.py --regenerate benchmarks/results/fidelity_cpu.txt  # its reports, from the run log

For each space (sparse_attn, head_grouping, sharing, precision), every configuration of a fixed panel spanning
the space is trained at the default proxy (conf/proxy/tiny.yaml) and at its reference (nas/evaluation/reference.py: 4x
depth, 4x context, 8x tokens), both on the space's default task (the space file's defaults list) with the
same seed, and scored with the task's objective. The panel is written in proxy units; a configuration carries
to the reference by the one rule of nas/knobs.py. The reference's dense configuration must itself pass the
space's adequacy checks (nas/evaluation/adequacy.py); a reference that fails them is reported, and its tau is not a
fidelity figure.

A trained signal must beat the free one: beside the proxy, the panel is ranked by each of the space's compute
objectives and by unique non-embedding parameters at the space's target (nas.cost, as a search costs a trial;
more compute = better). Every ranking is scored against the reference: Kendall tau-b; resolved pairs (those the
reference separates by more than two standard errors of its seed noise; all pairs where it has no estimate);
iso-compute pairs (within 5% on the space's primary compute axis, the decisions a cost model cannot make; a tie
is not right); decision regret at budgets of 0.5, 0.7 and 0.9 of dense on the primary axis (the reference
quality of the ranking's best configuration within the budget minus the reference's best there); and, for the
proxy, calibration (quality / dense at the proxy against the same ratio at the reference).

Every finished run is appended to benchmarks/results/fidelity_runs.jsonl (keyed by role, task, knobs, seed
and the proxy's sizes), so the benchmark resumes where it stopped and a space can be measured in several
sittings. A report that trains nothing depends only on that log, so a results file regenerates byte-identically.
Last line: `fidelity tau_min=... margin_min=... iso_acc_min=... regret_max=... tau_<space>=...` (margin: the
proxy's tau-b minus the best zero-cost tau-b; `nan` where not measured or not defined).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shlex
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.study.ranking import (
    ISO_TOLERANCE,
    Pair,
    beyond_compute,
    iso_compute_pairs,
    kendall_tau_b,
    ordered_right,
    resolved_pairs,
)
from nas.study.view import tie_margin

SPACES = ("sparse_attn", "head_grouping", "sharing", "precision")
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "fidelity_runs.jsonl"


def _lg(window: int, global_tokens: int, gate: str = "none") -> dict[str, Any]:
    return {"attention": "local_global", "window": window, "global_tokens": global_tokens, "gate": gate}


def _prec(attention: str, ffn: str, embed: str = "fp32", adaptive: str | None = None) -> dict[str, Any]:
    p = {"attention": attention, "ffn": ffn, "embed": embed}
    return {"precision": {**p, "adaptive_format": adaptive} if adaptive else p}


PANELS: dict[str, list[dict[str, Any]]] = {  # knobs in panel_units' (the space's default proxy), each carried to a
    # proxy or reference of other sizes by nas/knobs.py
    "sparse_attn": [{}, _lg(4, 0), _lg(4, 4), _lg(6, 2, "dynamic"), _lg(8, 0), _lg(8, 2), _lg(11, 4, "dynamic"),
                    _lg(16, 0), _lg(16, 4), _lg(16, 4, "dynamic")],
    "head_grouping": [{}, {"kv_heads": 2}, {"kv_heads": 1}, {"kv_heads": 2, "group_share": "qkv"},
                      {"kv_heads": 1, "group_share": "qkv"}],  # every distinct configuration at 4 heads
    "sharing": [{}, {"sharing": "all", "sharing_scope": "both"}, {"sharing": "all", "sharing_scope": "ffn"},
                {"sharing": "all", "sharing_scope": "attention"}, {"sharing": "adjacent", "sharing_scope": "ffn"},
                {"sharing": "cycle", "sharing_scope": "ffn"}, {"sharing": "cycle_rev", "sharing_scope": "attention"},
                {"sharing": "adjacent", "sharing_scope": "both"},
                {"sharing": "ffn_block_diag", "sharing_scope": "ffn"},
                # equal unique parameters (issue #21 item 2): the FFN tied by three patterns; attention tied two
                # ways beside the block-diagonal FFN; whole layers tied by three patterns
                {"sharing": "cycle_rev", "sharing_scope": "ffn"},
                {"sharing": "adjacent", "sharing_scope": "attention"},
                {"sharing": "cycle", "sharing_scope": "both"}, {"sharing": "cycle_rev", "sharing_scope": "both"}],
    "precision": [{}, _prec("bf16", "bf16", "bf16"), _prec("fp16", "fp16"), _prec("fp32", "fp8_e4m3"),
                  _prec("fp32", "fp8_e5m2"), _prec("fp8_e4m3", "fp8_e4m3"),
                  _prec("bf16", "adaptive", "fp32", "fp8_e5m2"),
                  _prec("fp8_e5m2", "fp8_e5m2"),  # adaptive with e5m2 is the recipe's own assignment
                  # equal modelled time (issue #21 item 2): 16-bit formats at fp32 embeddings; the FFN in e4m3,
                  # e5m2 or adaptive (fp32, then e4m3) beside fp32 attention
                  _prec("bf16", "bf16"), _prec("bf16", "fp16"), _prec("fp32", "adaptive")],
}


# The base a recorded run's proxy is keyed against: ProxySpec's defaults when the first runs were recorded (it
# has none for its sizes and recipe now), and the default of every field added since (a proxy that leaves a new
# option at its default keeps its key), so the keys in fidelity_runs.jsonl stay stable
_FIRST_BASE = {"name": "tiny", "n_layers": 2, "d_model": 64, "n_heads": 4, "ffn_mult": 4.0, "seq_len": 128,
               "batch_size": 16, "lr": 3e-3, "weight_decay": 0.1, "warmup_steps": 20, "min_lr_ratio": 0.1,
               "grad_clip": 1.0, "budget_tokens": 524_288, "rungs": 4, "rung_base": 2.0, "eval_batches": 4}


@functools.cache
def proxy_key_base() -> dict[str, Any]:
    """The base a recorded run's proxy is keyed against (see _FIRST_BASE)."""
    from dataclasses import MISSING, fields

    from nas.evaluation.proxy import ProxySpec

    return {**{f.name: f.default for f in fields(ProxySpec) if f.default is not MISSING}, **_FIRST_BASE}


def _non_default(data: dict[str, Any], cls: type | dict[str, Any]) -> dict[str, Any]:
    """The fields of a dataclass dict that differ from the class defaults, or from a base dict (new default fields
    keep keys stable)."""
    defaults = cls if isinstance(cls, dict) else asdict(cls())
    return {k: v for k, v in data.items() if v != defaults.get(k)}


def run_key(role: str, task: dict[str, Any], knobs: dict[str, Any], seed: int, proxy: dict[str, Any]) -> str:
    """Identity of one training run (the task without its name: equal tasks share runs)."""
    from nas.evaluation.data import MQARSpec, TaskSpec

    task = {**_non_default(task, TaskSpec), "mqar": _non_default(task["mqar"], MQARSpec)}
    task.pop("name", None)
    return json.dumps({"role": role, "task": task, "knobs": knobs, "seed": seed,
                       "proxy": _non_default(proxy, proxy_key_base())}, sort_keys=True)


def load_runs(path: Path) -> dict[str, dict[str, Any]]:
    """Recorded runs by key (later lines win)."""
    runs = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                runs[row["key"]] = row
    return runs


def train_one(key: str, role: str, proxy: dict[str, Any], task: dict[str, Any], knobs: dict[str, Any], seed: int,
              threads: int, device: str = "cpu") -> dict[str, Any]:
    """Train one configuration; its final quality, metrics and wall time."""
    import torch

    from nas.evaluation.data import TaskSpec
    from nas.evaluation.proxy import ProxySpec, proxy_arch, train_proxy
    from nas.evaluation.scoring import quality

    torch.set_num_threads(threads)
    spec, task_spec = ProxySpec.from_dict(proxy), TaskSpec.from_dict(task)
    parent = ready_parent(spec, task_spec, seed, device) if spec.evaluation == "inherit" else None
    start = time.perf_counter()
    reports = list(train_proxy(knobs, spec, task_spec, seed=seed, threads=threads, device=device))
    final = reports[-1]
    wall = time.perf_counter() - start
    row = {"key": key, "role": role, "proxy": spec.name, "task": task_spec.name, "knobs": knobs, "seed": seed,
           "arch": proxy_arch(knobs, spec).to_dict(), "quality": quality(final, task_spec),
           "metrics": final.metrics, "wall_s": wall, "device": device,
           "cpu_capability": torch.backends.cpu.get_cpu_capability()}  # AVX2 / AVX512: speed and float rounding differ
    if parent is not None:  # inherit: the cached parent's digest and its one-off training time (not in wall_s)
        row |= {"parent": parent[0], "parent_wall_s": parent[1]}
    return row


def ready_parent(proxy: Any, task: Any, seed: int, device: str = "cpu") -> tuple[str, float]:
    """Train (or find) an inherit proxy's dense parent before any trial is timed: its digest and its recorded
    training time (once per proxy, task and seed)."""
    import torch

    from nas.device import resolve_device
    from nas.evaluation.data import TaskData
    from nas.evaluation.parent import default_parent_dir, load_parent
    from nas.evaluation.proxy import proxy_arch

    _, digest = load_parent(proxy_arch({}, proxy), proxy, task, {proxy.seq_len: TaskData(task, proxy.seq_len)},
                            seed, 1, resolve_device(device))
    return digest, float(torch.load(default_parent_dir() / f"{digest}.pt", weights_only=True)["wall_s"])


def space_proxy(space: str, base: Any, name: str | None = None) -> Any:
    """The space's default proxy (its defaults list, else tiny; `name` overrides it) with the rungs, evaluation and
    context growth of `base`, its steps (and an inherit parent's) scaled as `base`'s are from the tiny proxy's (1
    unless --quick)."""
    from nas.evaluation.proxy import load_proxy
    from nas.study.space import default_choice

    proxy = replace(load_proxy(name or default_choice(space, "proxy") or "tiny"), min_context=base.min_context)
    scale = base.budget_tokens / load_proxy("tiny").budget_tokens
    steps = lambda tokens: max(1, round(tokens * scale / proxy.tokens_per_step)) * proxy.tokens_per_step  # noqa: E731
    return replace(proxy, budget_tokens=steps(proxy.budget_tokens), rungs=base.rungs, eval_batches=base.eval_batches,
                   parent_budget_tokens=steps(proxy.parent_budget_tokens))


def top_k_agreement(a: list[float], b: list[float], k: int = 3) -> float:
    """Share of the k best (lowest) of `a` that are among the k best of `b`."""
    best = lambda xs: set(sorted(range(len(xs)), key=lambda i: (xs[i], i))[:k])  # noqa: E731
    return len(best(a) & best(b)) / k


def seeds_to_resolve(gap: float, sd: float) -> float:
    """Seeds per configuration at which two standard errors of a difference of two means, 2 sd sqrt(2 / n), fall
    below `gap` (a recorded difference taken as the true one); inf for a gap of zero."""
    return math.floor(8 * sd * sd / (gap * gap)) + 1 if gap else math.inf


def unresolved_seeds_line(b: list[float], noise: float, sd: float, seeds: int) -> str:
    """What would resolve the pairs `b` leaves within `noise`: the seeds per configuration that resolve half and
    three quarters of them, if their recorded differences are the true ones."""
    gaps = sorted(abs(b[i] - b[j]) for i in range(len(b)) for j in range(i + 1, len(b)) if abs(b[i] - b[j]) <= noise)
    if not gaps:
        return "pairs the reference leaves unresolved: none"
    need = sorted(seeds_to_resolve(g, sd) for g in gaps)
    at = [need[math.ceil(q * len(need)) - 1] for q in (0.5, 0.75)]
    shown = [str(n) if n < math.inf else "never (equal)" for n in at]
    return (f"pairs the reference leaves unresolved: {len(gaps)}; seeds per configuration that would resolve half "
            f"of them: {shown[0]}, three quarters: {shown[1]} (now {seeds}; if their recorded gaps are the true ones)")


BUDGETS = (0.5, 0.7, 0.9)  # decision budgets on the primary axis, as shares of the dense baseline's


def budget_regret(predicted: list[float], reference: list[float], compute: list[float], budget: float
                  ) -> float | None:
    """Reference quality (lower = better) of the configuration `predicted` ranks best among those with compute <=
    `budget`, minus the reference's best among them; a tie for best in `predicted` counts the mean of the tied
    (a coin flip's expectation). None when no configuration fits the budget."""
    within = [i for i, c in enumerate(compute) if c <= budget]
    if not within:
        return None
    best = min(predicted[i] for i in within)
    picks = [reference[i] for i in within if predicted[i] == best]
    return sum(picks) / len(picks) - min(reference[i] for i in within)


def calibration(proxy: list[float], reference: list[float]) -> tuple[float | None, float]:
    """Each configuration's quality as a ratio to the first's (the dense baseline) at the proxy against the
    reference, over the other configurations: (Pearson r, None when either side is constant; mean |difference|)."""
    p, r = [q / proxy[0] for q in proxy[1:]], [q / reference[0] for q in reference[1:]]
    try:
        pearson: float | None = statistics.correlation(p, r)
    except statistics.StatisticsError:
        pearson = None
    return pearson, sum(abs(x - y) for x, y in zip(p, r)) / len(p)


def non_embedding_params(params: dict[str, Any]) -> int:
    """Unique parameters without the embedding and unembedding tables (nas.cost.param_counts' components)."""
    parts = params["components"]
    return params["unique"] - parts["embedding"]["unique"] - parts["unembedding"]["unique"]


def zero_cost_axes(space: str, proxy: Any, panel: list[dict[str, Any]] | None = None
                   ) -> tuple[str, list[tuple[str, list[float]]]]:
    """The panel costed at the space's target as a search costs a trial (proxy_arch, then Coster.estimate): per
    compute objective of the space (primary first), then unique non-embedding parameters, the value of each
    configuration; and the target and hardware they were costed on."""
    from nas.cost import Coster
    from nas.evaluation.proxy import proxy_arch
    from nas.study.space import default_choice, load, path_of

    coster = Coster(default_choice(space, "target") or "gpt_1b")  # conf/search.yaml's target; its hardware
    units = panel_units(space)  # the panel's own units: every proxy kind is ranked against the same costs
    spec = load(path_of(space), proxy_arch({}, proxy))
    costs = [coster.estimate(proxy_arch(knobs, units)) for knobs in (PANELS[space] if panel is None else panel)]
    axes = [(key, [float(getattr(c, key)) for c in costs]) for key in spec.objectives]
    axes.append(("non-embedding params", [float(non_embedding_params(c.params)) for c in costs]))
    return f"{coster.target} on {coster.hardware}", axes


def reference_adequacy(space: str, proxy: Any, reference: Any, task: Any, dense_metrics: dict[str, float],
                       window_rule: str = "context_share") -> list[dict]:
    """The space's adequacy checks applied to the reference's dense run (windows carried to its context by
    `window_rule`)."""
    from nas.evaluation import adequacy
    from nas.evaluation.proxy import proxy_arch
    from nas.study.space import load, path_of

    spec = load(path_of(space), proxy_arch({}, proxy))
    names = {p.name for p in spec.params}
    checks: list[dict] = []
    if names & set(adequacy.ATTENTION_KNOBS):
        scale = reference.seq_len // proxy.seq_len if window_rule == "context_share" else 1
        carried = replace(spec, params=tuple(replace(p, high=p.high * scale) if p.name == "window" else p
                                             for p in spec.params))
        checks += adequacy.attention_checks(dense_metrics, carried, reference, task)[0]
    if names & set(adequacy.CAPACITY_KNOBS):
        checks.append(adequacy.capacity_check(dense_metrics, task, reference, None)[0])
    return checks


@dataclass(frozen=True)
class Choice:
    """What to compare: `base` scales the budgets; `proxy` replaces the spaces' default proxies; the reference is
    that of the proxy `reference_of` names for the space (SPACE=NAME, or NAME for every space) instead of the
    measured proxy's own. A role's quality is its mean over `proxy_seeds` / `reference_seeds` seeds from `seed`
    (entries [SPACE=]N, like `reference_of`; 1 where none applies)."""

    base: Any
    seed: int = 0
    proxy: str | None = None
    reference_of: tuple[str, ...] = ()
    proxy_seeds: tuple[str, ...] = ()
    reference_seeds: tuple[str, ...] = ()
    noise_seeds: int = 1  # the dense baseline also trains at seeds seed .. seed + noise_seeds - 1, at both sizes
    window_rule: str = "context_share"  # how a panel window carries to the reference (nas/knobs.py's rules)
    partial: bool = False  # report the configurations recorded so far (dense among them) instead of none

    def reference_for(self, space: str) -> str | None:
        """The proxy whose reference ranks `space` (None: the measured proxy's own)."""
        return for_space(self.reference_of, space)

    def n_seeds(self, role: str, space: str) -> int:
        """How many seeds a role ("proxy" or "reference") trains each of the space's configurations at."""
        return int(for_space(self.proxy_seeds if role == "proxy" else self.reference_seeds, space) or 1)

    def seeds(self, role: str, space: str) -> range:
        """The seeds a role trains each configuration of `space` at; its quality is their mean."""
        return range(self.seed, self.seed + self.n_seeds(role, space))

    def describe_seeds(self, space: str) -> str:
        """The seeds of both roles, as a report's heading says them."""
        def span(n: int) -> str:
            return f"seed {self.seed}" if n == 1 else f"mean of seeds {self.seed}-{self.seed + n - 1}"

        proxy, reference = self.n_seeds("proxy", space), self.n_seeds("reference", space)
        return span(proxy) if proxy == reference else f"proxy: {span(proxy)}; reference: {span(reference)}"

    def seed_flags(self, space: str) -> str:
        """The command-line flags that ask for this space's seeds."""
        return "".join(f" --{role}-seeds {self.n_seeds(role, space)}" for role in ("proxy", "reference")
                       if self.n_seeds(role, space) > 1)


def for_space(entries: tuple[str, ...], space: str) -> str | None:
    """The value of the last SPACE=VALUE entry for `space`, else of the last bare VALUE, else None."""
    values = {k if sep else None: v for k, sep, v in (e.rpartition("=") for e in entries)}
    return values.get(space, values.get(None))


def panel_runs(space: str, choice: Choice) -> tuple[Any, Any, Any, list[tuple]]:
    """The space's task, proxy, reference and its runs: (key, role, proxy dict, task dict, knobs, seed) per run,
    per configuration its proxy seeds then its reference."""
    from nas.evaluation.data import load_task
    from nas.evaluation.reference import reference_proxy
    from nas.study.space import default_choice

    task = load_task(default_choice(space, "task") or "lm")
    proxy = space_proxy(space, choice.base, choice.proxy)
    reference_of = choice.reference_for(space)
    reference = reference_proxy(space_proxy(space, choice.base, reference_of) if reference_of else proxy)
    sizes = {"proxy": (proxy, asdict(proxy)), "reference": (reference, asdict(reference))}
    written_in = panel_units(space)
    todo = [(run_key(role, task.to_dict(), units, seed, p), role, p, task.to_dict(), units, seed)
            for knobs in PANELS[space] for role, (size, p) in sizes.items()
            for units in [in_units(knobs, written_in, size, choice.window_rule)] for seed in choice.seeds(role, space)]
    return task, proxy, reference, todo


def panel_units(space: str) -> Any:
    """The proxy whose units a space's panel is written in: the space's default proxy (sparse_attn's tiny_2m, of
    tiny's sizes; sharing's tiny_deep: its patterns' unique layers are those of 4 layers)."""
    from nas.evaluation.proxy import load_proxy
    from nas.study.space import default_choice

    return load_proxy(default_choice(space, "proxy") or "tiny")


def in_units(knobs: dict[str, Any], units: Any, size: Any, window_rule: str = "context_share") -> dict[str, Any]:
    """A panel configuration (knobs in the proxy `units`' units) in the units of `size` (a proxy or a reference), by
    nas/knobs.py's rules (the window's as `window_rule` says): only the knobs it names, those whose rule keeps
    them as they are left as written (so a run's key names what it trained)."""
    from nas.evaluation.proxy import proxy_arch, proxy_sizes
    from nas.knobs import carry, knobs_of
    from nas.model.config import KNOBS

    carried = knobs_of(carry(proxy_arch(knobs, units), proxy_sizes(size),
                             rules={"window": window_rule}))
    return {k: v if KNOBS[k].scale == "as_is" else carried[k] for k, v in knobs.items()}


def noise_runs(space: str, choice: Choice) -> list[tuple]:
    """The dense baseline's runs at choice.noise_seeds seeds from choice.seed, proxy and reference, as panel_runs
    lists runs: their spread is the seed noise a ranking must beat."""
    task, proxy, reference, _ = panel_runs(space, choice)
    return [(run_key(role, task.to_dict(), {}, seed, asdict(p)), role, asdict(p), task.to_dict(), {}, seed)
            for role, p in (("proxy", proxy), ("reference", reference))
            for seed in range(choice.seed, choice.seed + choice.noise_seeds)]


def train_missing(spaces: list[str], choice: Choice, workers: int, runs_path: Path,
                  runs: dict[str, dict[str, Any]], device: str = "cpu", role: str | None = None) -> None:
    """Train every unrecorded run of `spaces` in one pool (no core idles between spaces), appending each to the
    run log as it finishes. Order: the first space's references, then every proxy run (short), then the later
    spaces' references, so a stopped benchmark has finished whole spaces first."""
    jobs = [(i, t) for i, space in enumerate(spaces) for t in panel_runs(space, choice)[3] + noise_runs(space, choice)
            if t[0] not in runs and role in (None, t[1])]
    jobs = list({t[0]: (i, t) for i, t in reversed(jobs)}.values())  # a dense run listed twice trains once
    if not jobs:
        return
    jobs.sort(key=lambda j: (j[1][1] == "reference" and j[0] > 0, j[1][1] == "proxy", j[0]))
    print(f"{', '.join(spaces)}: {len(jobs)} runs to train ({workers} at a time)", flush=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(train_one, key, role, p, task, knobs, seed, 1, device)
                   for _, (key, role, p, task, knobs, seed) in jobs]
        for done in as_completed(futures):
            row = done.result()
            with runs_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            runs[row["key"]] = row
            print(f"  {row['role']:>9} {json.dumps(row['knobs']):60s} quality={row['quality']:.4f} "
                  f"{row['wall_s']:.0f}s", flush=True)


@dataclass(frozen=True)
class Figures:
    """A space's headline figures for the summary line (None: not defined on this panel)."""

    tau: float | None  # the proxy's Kendall tau-b against the reference
    margin: float | None  # that minus the best zero-cost ranking's tau-b
    iso_accuracy: float | None  # share of the iso-compute pairs the reference resolves that the proxy orders right
    regret: float | None  # the proxy's largest decision regret over the budgets
    scores: dict[str, Score] = field(default_factory=dict)  # every ranking's score, the proxy's first
    trial_wall_s: float = 0.0  # the proxy's mean wall time per configuration, its seeds summed
    parent_wall_s: float = 0.0  # an inherit proxy's parent(s): training time once per task and seed


def report(space: str, choice: Choice, runs: dict[str, dict[str, Any]], out: list[str]) -> Figures:
    """Print one recorded space's tables: the panel at both sizes, then every ranking (the proxy's and each
    zero-cost one) against the reference; its headline figures."""
    from nas.evaluation.reference import describe

    task, proxy, reference, _ = panel_runs(space, choice)
    units = functools.partial(in_units, units=panel_units(space), window_rule=choice.window_rule)
    rows = [(knobs, recorded_runs(runs, "proxy", task, units(knobs, size=proxy), proxy, choice.seeds("proxy", space)),
             recorded_runs(runs, "reference", task, units(knobs, size=reference), reference,
                           choice.seeds("reference", space)))
            for knobs in PANELS[space]]
    n_seeds = (choice.n_seeds("proxy", space), choice.n_seeds("reference", space))
    rows = [row for row in rows if (len(row[1]), len(row[2])) == n_seeds]  # all, unless choice.partial
    panel = [knobs for knobs, _, _ in rows]
    mean = lambda rs: sum(r["quality"] for r in rs) / len(rs)  # noqa: E731
    pq, rq = [mean(p) for _, p, _ in rows], [mean(r) for _, _, r in rows]
    rank = lambda xs: [sorted(xs).index(x) + 1 for x in xs]  # noqa: E731
    partial = f" of {len(PANELS[space])}" if len(panel) < len(PANELS[space]) else ""
    out.append(f"## {space} (task {task.name}; {len(panel)}{partial} configurations"
               f"{' (the rest not recorded yet)' if partial else ''}, {choice.describe_seeds(space)})")
    out.append(f"proxy     {describe(proxy)}; wall {sum(r['wall_s'] for _, p, _ in rows for r in p):.0f} s")
    out.append(f"reference {describe(reference)}; wall {sum(r['wall_s'] for _, _, ref in rows for r in ref):.0f} s")
    out.append("| configuration | proxy quality | rank | reference quality | rank |")
    out.append("|---|---:|---:|---:|---:|")
    for (knobs, _, _), p, pr, r, rr in zip(rows, pq, rank(pq), rq, rank(rq)):
        out.append(f"| {json.dumps(knobs) if knobs else 'dense baseline'} | {p:.4f} | {pr} | {r:.4f} | {rr} |")
    windows = sorted({(units(k, size=proxy)["window"], units(k, size=reference)["window"])
                      for k in panel if k.get("window")})
    if windows:
        out.append(f"reference windows ({choice.window_rule} rule of nas/knobs.py): "
                   + ", ".join(f"{w} -> {rw}" for w, rw in windows) + f" (of {proxy.seq_len} -> {reference.seq_len})")
    checks = reference_adequacy(space, proxy, reference, task, rows[0][2][0]["metrics"], choice.window_rule)
    for c in checks:
        out.append(f"reference adequacy: {c['name']} = {c['measured']:.3f} (needs {c['threshold']:.3f}): "
                   f"{'pass' if c['passed'] else 'FAIL'}")
    shown = range(choice.seed, choice.seed + NOISE_SEEDS_SHOWN)
    out.extend(noise_lines({role: recorded_runs(runs, role, task, {}, size, shown)
                            for role, size in (("proxy", proxy), ("reference", reference))}))
    sds = {role: pooled_seed_sd([recorded_runs(runs, role, task, units(knobs, size=size), size, shown)
                                 for knobs in panel])
           for role, size in (("proxy", proxy), ("reference", reference))}  # each proxy kind's seed noise, as recorded
    for (role, sd), size in zip(sds.items(), (proxy, reference)):
        out.append(f"{role} seed sd {sd[0]:.4f} ({size.name}: pooled over the panel's recorded seeds, dof {sd[1]})"
                   if sd else f"{role} seed sd: no estimate ({size.name}: no configuration has two recorded seeds)")
    sd = sds["reference"]
    # two standard errors of a difference of two means over the reference's seeds; no estimate: every pair counts
    noise = tie_margin(sd[0], choice.n_seeds("reference", space)) if sd else 0.0
    proxy_sd = sds["proxy"]  # the proxy's own tie margin: differences a search's front treats as ties
    proxy_margin = tie_margin(proxy_sd[0], choice.n_seeds("proxy", space)) if proxy_sd else 0.0
    out.append(f"pairs the reference resolves: {len(resolved_pairs(rq, noise))} of {len(rq) * (len(rq) - 1) // 2} "
               + (f"(they differ by more than two standard errors of its seed noise, {noise:.4f})" if sd else
                  "(no seed-noise estimate: every pair counts)"))
    if sd:
        out.append(unresolved_seeds_line(rq, noise, sd[0], choice.n_seeds("reference", space)))
    ranking_lines, figures = rankings(space, proxy, pq, rq, noise, panel, proxy_margin)
    out.extend(ranking_lines)
    parents = {r["parent"]: r["parent_wall_s"] for _, p, _ in rows for r in p if "parent" in r}
    figures = replace(figures, trial_wall_s=sum(r["wall_s"] for _, p, _ in rows for r in p) / len(rows),
                      parent_wall_s=sum(parents.values()))
    out.append(f"Kendall tau-b = {figures.tau if figures.tau is None else f'{figures.tau:.3f}'}; top-3 agreement = "
               f"{top_k_agreement(pq, rq):.2f}"
               + ("" if all(c["passed"] for c in checks) else " (the reference fails adequacy: not a fidelity figure)"))
    return figures


def short_name(knobs: dict[str, Any]) -> str:
    """A panel configuration in a few words: its knob values, nested ones flattened ("dense" for none)."""
    flat = {k: v for k, v in knobs.items() if not isinstance(v, dict) and k != "attention"}
    flat.update(next((v for v in knobs.values() if isinstance(v, dict)), {}))
    return " ".join(f"{k}={v}" for k, v in flat.items()) or "dense"


@dataclass(frozen=True)
class Score:
    """One ranking (predicted quality, lower = better) against the reference on one panel."""

    tau: float | None  # Kendall tau-b
    resolved: tuple[int, int]  # (ordered right, pairs) over the pairs the reference resolves
    iso: tuple[int, int]  # the same over the iso-compute pairs
    iso_resolved: tuple[int, int]  # the same over the iso-compute pairs the reference resolves
    regrets: tuple[float | None, ...]  # per budget of BUDGETS


def score(predicted: list[float], reference: list[float], primary: list[float], noise: float) -> Score:
    """Score a ranking against the reference: `primary` is the panel's primary compute axis (ratios to dense),
    `noise` the reference difference a pair needs to count as resolved."""
    resolved, iso = resolved_pairs(reference, noise), iso_compute_pairs(primary)
    iso_resolved = [p for p in iso if p in resolved]
    count = lambda pairs: (ordered_right(predicted, reference, pairs), len(pairs))  # noqa: E731
    return Score(kendall_tau_b(predicted, reference), count(resolved), count(iso), count(iso_resolved),
                 tuple(budget_regret(predicted, reference, primary, b) for b in BUDGETS))


def rankings(space: str, proxy: Any, pq: list[float], rq: list[float], noise: float, panel: list[dict[str, Any]],
             proxy_margin: float = 0.0) -> tuple[list[str], Figures]:
    """The proxy's ranking and each zero-cost one (more compute = better) scored against the reference, the pairs
    where the proxy contradicts the free ranking beyond `proxy_margin` (its own tie margin) checked against the
    reference, and the proxy's calibration: the report's lines and the space's figures."""
    where, axes = zero_cost_axes(space, proxy, panel)
    primary_name, primary = axes[0]
    iso = iso_compute_pairs(primary)
    n_resolved = len([p for p in iso if p in resolved_pairs(rq, noise)])
    pairs = ", ".join(f"{short_name(panel[i])} ~ {short_name(panel[j])}" for i, j in iso)
    budgets = " / ".join(f"{b:g}" for b in BUDGETS)
    lines = [(f"zero-cost rankings: the panel costed at {where} (nas.cost, as a search costs a trial); more "
              f"compute = better, equal compute a tie; primary axis {primary_name}")]
    lines.append(f"iso-compute pairs (within {ISO_TOLERANCE:.0%} on {primary_name}): {len(iso)}"
                 f"{': ' + pairs if iso else ''}; the reference resolves {n_resolved} of them; a tie is not right")
    lines.append(f"budgets ({primary_name} <= {budgets} of dense): "
                 f"{' / '.join(str(sum(c <= b for c in primary)) for b in BUDGETS)} configurations fit; regret = "
                 f"the reference quality of the ranking's pick minus the reference's best that fits (a tie for the "
                 f"pick: their mean; '-': none fits)")
    lines.append(f"| ranking | Kendall tau-b | resolved pairs right | iso-compute pairs right (resolved) | regret at "
                 f"{budgets} | quality / dense vs the reference's: Pearson r, mean abs diff |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    fmt = lambda x, spec=".3f": "-" if x is None else format(x, spec)  # noqa: E731
    ratio = lambda right_pairs: f"{right_pairs[0]}/{right_pairs[1]}"  # noqa: E731
    scores = {f"proxy {proxy.name}": score(pq, rq, primary, noise)}
    scores.update((name, score([-v for v in values], rq, primary, noise)) for name, values in axes)
    r, diff = calibration(pq, rq)
    for i, (label, sc) in enumerate(scores.items()):
        lines.append(f"| {label if i == 0 else f'zero-cost: {label}'} | {fmt(sc.tau)} | {ratio(sc.resolved)} | "
                     f"{ratio(sc.iso)} ({ratio(sc.iso_resolved)}) | {' / '.join(fmt(g, '.4f') for g in sc.regrets)} "
                     f"| {f'{fmt(r)}, {diff:.4f}' if i == 0 else '-'} |")
    own, *baselines = scores.items()
    best = max(((n, sc.tau) for n, sc in baselines if sc.tau is not None), key=lambda nt: nt[1], default=None)
    margin = None if own[1].tau is None or best is None else own[1].tau - best[1]  # best: the first of equal ones
    lines.append(f"margin: the proxy's tau-b minus the best zero-cost tau-b ({best[0] if best else '-'}) = "
                 f"{fmt(margin, '+.3f')}")
    lines.append(beyond_compute_line(pq, rq, primary, primary_name, proxy_margin, noise))
    right, n = own[1].iso_resolved
    regrets = [g for g in own[1].regrets if g is not None]
    return lines, Figures(own[1].tau, margin, right / n if n else None, max(regrets) if regrets else None, scores)


def beyond_compute_line(pq: list[float], rq: list[float], primary: list[float], primary_name: str,
                        proxy_margin: float, noise: float) -> str:
    """Where the proxy tells a search more than the free ranking (nas.study.ranking.beyond_compute: pairs it
    separates beyond its own tie margin against compute or at equal compute), how often the reference agrees."""
    against, equal = beyond_compute(pq, primary, proxy_margin)
    resolved = set(resolved_pairs(rq, noise))

    def checked(pairs: list[Pair]) -> str:
        sure = [p for p in pairs if p in resolved]
        return (f"the reference orders {ordered_right(pq, rq, pairs)} of them the proxy's way "
                f"({ordered_right(pq, rq, sure)} of the {len(sure)} it resolves)")

    beyond = (f"beyond its own seed noise (tie margin {proxy_margin:.4f})" if proxy_margin else
              "(no proxy noise estimate: by any difference)")
    return (f"where the proxy contradicts the free ranking {beyond}: {len(against)} pairs against {primary_name}, "
            f"{checked(against)}; {len(equal)} equal-compute pairs, {checked(equal)}")


def compare_kinds(space: str, kinds: list[str], choice: Choice, runs: dict[str, dict[str, Any]], out: list[str]
                  ) -> None:
    """One table of proxy kinds (NAME, or NAME:N for its quality averaged over N seeds) against one reference (the
    one choice names for the space, else the space's default proxy's), each at its recorded wall time per trial,
    with the zero-cost rankings below them: what a trial's compute buys over the free ranking."""
    from nas.study.space import default_choice

    reference_of = choice.reference_for(space) or default_choice(space, "proxy") or "tiny"
    windows = f" (windows to it by {choice.window_rule})" if any("window" in k for k in PANELS[space]) else ""
    out.append(f"## {space}: proxy kinds against the reference of {reference_of}{windows}; wall per trial: the mean "
               f"over the panel of a configuration's runs, its seeds summed, as recorded (1 thread a run, 2 or more "
               f"runs sharing 2 cores)")
    out.append("| ranking | wall per trial (s) | Kendall tau-b | margin | resolved pairs right | iso-compute pairs "
               "right (resolved) | regret max |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    fmt = lambda x, spec=".3f": "-" if x is None else format(x, spec)  # noqa: E731
    ratio = lambda pair: f"{pair[0]}/{pair[1]}"  # noqa: E731
    zero_cost: dict[str, Score] = {}
    for kind in kinds:
        name, _, n = kind.partition(":")
        k_choice = replace(choice, proxy=name, proxy_seeds=(f"{space}={n or 1}",), reference_of=(reference_of,))
        todo = panel_runs(space, k_choice)[3]
        if not reportable(todo, runs, choice.partial):
            out.append(f"| proxy {kind}: {sum(t[0] in runs for t in todo)} of {len(todo)} runs recorded | | | | | | |")
            continue
        figures = report(space, k_choice, runs, [])
        (_, own), *baselines = figures.scores.items()
        zero_cost = dict(baselines)
        regrets = [g for g in own.regrets if g is not None]
        parent = f" + parent {figures.parent_wall_s:.0f} once" if figures.parent_wall_s else ""
        out.append(f"| proxy {name}{f' (mean of {n} seeds)' if n else ''} | {figures.trial_wall_s:.0f}{parent} | "
                   f"{fmt(own.tau)} | {fmt(figures.margin, '+.3f')} | {ratio(own.resolved)} | {ratio(own.iso)} "
                   f"({ratio(own.iso_resolved)}) | {fmt(max(regrets) if regrets else None, '.4f')} |")
    for label, sc in zero_cost.items():
        regrets = [g for g in sc.regrets if g is not None]
        out.append(f"| zero-cost: {label} | 0 | {fmt(sc.tau)} | - | {ratio(sc.resolved)} | {ratio(sc.iso)} "
                   f"({ratio(sc.iso_resolved)}) | {fmt(max(regrets) if regrets else None, '.4f')} |")


def reportable(todo: list[tuple], runs: dict[str, dict[str, Any]], partial: bool) -> bool:
    """Whether a space's runs (panel_runs' list) can be reported: all recorded, or (partial) its dense baseline's."""
    return all(t[0] in runs for t in todo if not partial or not t[4])


NOISE_SEEDS_SHOWN = 10  # recorded dense runs at up to this many seeds are reported


def recorded_runs(runs: dict[str, dict[str, Any]], role: str, task: Any, knobs: dict[str, Any], size: Any,
                  seeds: range) -> list[dict[str, Any]]:
    """The recorded runs of one configuration in one role at `size` (a proxy spec), at those of `seeds` run."""
    keys = (run_key(role, task.to_dict(), knobs, seed, asdict(size)) for seed in seeds)  # knobs in size's units
    return [runs[k] for k in keys if k in runs]


def pooled_seed_sd(groups_of_runs: list[list[dict[str, Any]]]) -> tuple[float, int] | None:
    """The seed standard deviation of quality pooled over configurations (one list of runs each) and its degrees
    of freedom; None when no configuration has two runs."""
    groups = [[r["quality"] for r in g] for g in groups_of_runs]
    dof = sum(len(g) - 1 for g in groups if g)
    if dof == 0:
        return None
    return math.sqrt(sum((q - sum(g) / len(g)) ** 2 for g in groups for q in g) / dof), dof


def noise_lines(dense_runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per role ("proxy", "reference": the dense baseline's recorded runs) with two or more seeds: its qualities
    and their spread."""
    lines = []
    for role, done in dense_runs.items():
        if len(done) > 1:
            qualities = [r["quality"] for r in done]
            lines.append(f"seed noise, {role}: dense baseline at seeds {', '.join(str(r['seed']) for r in done)} = "
                         f"{', '.join(f'{q:.4f}' for q in qualities)} (spread {max(qualities) - min(qualities):.4f})")
    return lines


def make_parser() -> argparse.ArgumentParser:
    """The command line (also what --regenerate parses each recorded command with)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", action="append", choices=SPACES, help="space(s) to train (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once, one thread each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proxy-seeds", action="append", default=[], metavar="[SPACE=]N",
                        help="rank SPACE (default: every space) by the proxy's mean quality over N seeds")
    parser.add_argument("--reference-seeds", action="append", default=[], metavar="[SPACE=]N",
                        help="rank SPACE (default: every space) by the reference's mean quality over N seeds")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, a scratch run file: checks the machinery")
    parser.add_argument("--min-context", type=int, default=None,
                        help="rungs grow the proxy's context from this length (multi-fidelity along context)")
    parser.add_argument("--noise-seeds", type=int, default=1,
                        help="train the dense baseline at this many seeds, proxy and reference (the seed noise)")
    parser.add_argument("--role", choices=("proxy", "reference"), default=None,
                        help="train only this role's runs (e.g. the short proxy runs before the references)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: where the runs train (recorded: cpu)")
    parser.add_argument("--report-only", action="store_true", help="print recorded spaces only, train nothing")
    parser.add_argument("--proxy", default=None, help="measure this proxy instead of each space's default")
    parser.add_argument("--reference-of", action="append", metavar="[SPACE=]PROXY",
                        help="rank SPACE (default: every space) against the reference of PROXY (e.g. a recorded one) "
                             "instead of the measured proxy's own")
    parser.add_argument("--reference-window-rule", choices=("context_share", "context_tokens"), default="context_share",
                        help="how a panel window carries to the reference: the same share of its context (the "
                             "search's rule) or the same count of tokens (the reference runs recorded before "
                             "2026-12-03 trained this way)")
    parser.add_argument("--partial", action="store_true",
                        help="report a space from the configurations recorded so far (its dense baseline among them), "
                             "saying how many of the panel's are missing, instead of not at all")
    parser.add_argument("--kinds", default=None, metavar="NAME[:N],...",
                        help="report only a table of these proxy kinds (N: seeds averaged) against one reference, "
                             "each at its wall time per trial, beside the zero-cost rankings (trains nothing)")
    parser.add_argument("--regenerate", type=Path, metavar="FILE",
                        help="rewrite a results file (e.g. benchmarks/results/fidelity_cpu.txt): its # lines kept, "
                             "after each '#   python benchmarks/fidelity.py --report-only ...' line the report "
                             "it prints")
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """Train what the arguments ask (progress printed as it goes); the report of their spaces, summary line last.
    Without training, the report depends only on the recorded runs (no machine or wall-time lines)."""
    from nas.evaluation.proxy import load_proxy

    proxy = replace(load_proxy("tiny"), min_context=args.min_context)
    runs_path = RUNS
    if args.quick:
        proxy = replace(proxy, budget_tokens=8 * proxy.tokens_per_step, rungs=1, eval_batches=1)
        runs_path = Path(os.environ.get("TMPDIR", "/tmp")) / "nas-fidelity-quick.jsonl"
        runs_path.unlink(missing_ok=True)
    for flag, entries in (("proxy-seeds", args.proxy_seeds), ("reference-seeds", args.reference_seeds),
                          ("noise-seeds", [str(args.noise_seeds)])):
        for entry in entries:
            space, sep, n = entry.rpartition("=")
            if not n.isdigit() or int(n) < 1 or (sep and space not in SPACES):
                parser.error(f"--{flag}={entry} is invalid: expected N or SPACE=N with an integer N >= 1 and SPACE "
                             f"one of {', '.join(SPACES)}")
    trains = args.quick or (args.space is not None and not args.report_only)
    figures: dict[str, Figures | None] = {}
    out: list[str] = []
    start = time.perf_counter()
    runs = load_runs(runs_path)
    choice = Choice(proxy, args.seed, args.proxy, tuple(args.reference_of or ()), tuple(args.proxy_seeds),
                    tuple(args.reference_seeds), args.noise_seeds, args.reference_window_rule, args.partial)
    if trains:
        runs_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads 1 per run")
        train_missing(args.space or list(SPACES), choice, args.workers, runs_path, runs, args.device, args.role)
    for space in args.space or SPACES:
        if args.kinds:
            compare_kinds(space, args.kinds.split(","), choice, runs, out)
            out.append("")
            continue
        todo = panel_runs(space, choice)[3]
        if not reportable(todo, runs, choice.partial):
            done = sum(t[0] in runs for t in todo)
            out.append(f"## {space}: not measured yet, {done} of {len(todo)} runs recorded "
                       f"(python benchmarks/fidelity.py --space {space}{choice.seed_flags(space)} trains the rest)")
            figures[space] = None
        else:
            figures[space] = report(space, choice, runs, out)
        out.append("")
    if trains:
        out.append(f"wall {time.perf_counter() - start:.0f} s this run")
    return out if args.kinds else [*out, summary(figures)]


def summary(figures: dict[str, Figures | None]) -> str:
    """The last line: the worst space's tau-b, margin over the zero-cost rankings, iso-compute accuracy and regret,
    then each reported space's tau-b (nan: not measured yet, or not defined on its panel)."""
    def pick(field: str, worst: Any) -> str:
        values = [getattr(f, field) for f in figures.values() if f is not None and getattr(f, field) is not None]
        return f"{worst(values):.3f}" if values else "nan"

    tau = lambda f: "nan" if f is None or f.tau is None else f"{f.tau:.3f}"  # noqa: E731
    return (f"fidelity tau_min={pick('tau', min)} margin_min={pick('margin', min)} "
            f"iso_acc_min={pick('iso_accuracy', min)} regret_max={pick('regret', max)} "
            + " ".join(f"tau_{s}={tau(figures[s])}" for s in SPACES if s in figures))


COMMAND = "#   python benchmarks/fidelity.py "  # a recorded report's command line in a results file


def regenerate(path: Path, parser: argparse.ArgumentParser) -> None:
    """Rewrite a results file from the recorded runs: its comment lines ("# ...") kept; after each command line
    (continued by a trailing backslash on the next comment lines) the report it prints; every other line replaced."""
    lines, out, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not (line == "#" or line.startswith("# ")):  # a report's own "## space" headings are not comments
            continue
        out.append(line)
        if not line.startswith(COMMAND):
            continue
        command = line[1:].strip()
        while command.endswith("\\") and i < len(lines) and lines[i].startswith("#"):
            out.append(lines[i])
            command = command[:-1] + " " + lines[i][1:].strip()
            i += 1
        args = parser.parse_args(shlex.split(command)[2:])
        if not args.report_only or args.regenerate:
            parser.error(f"{path}: {command!r} is invalid here: expected a --report-only command")
        out.extend([*run(args, parser), ""])
    while out and not out[-1]:
        out.pop()
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    parser = make_parser()
    args = parser.parse_args()
    if args.regenerate:
        if not args.regenerate.is_file():
            parser.error(f"--regenerate {args.regenerate}: no such file")
        regenerate(args.regenerate, parser)
        return
    print("\n".join(run(args, parser)))


if __name__ == "__main__":
    main()
