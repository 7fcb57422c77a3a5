"""The context ladder (issue #22, item 4): does the quality a window costs track its share of the context or its count?

    python benchmarks/context_ladder.py --workers 2     # train what is missing (22 runs), then report
    python benchmarks/context_ladder.py --report-only   # the report, from the run log alone (trains nothing)
    python benchmarks/context_ladder.py --quick         # smoke run: tiny budgets, a scratch log under $TMPDIR
    python benchmarks/context_ladder.py --proxy tiny_2m # the same ladder on another proxy's sizes and budget

A window is stated in target tokens and nas/knobs.py carries it to a proxy by one of two rules: `context_share`
(the default: W of S positions becomes W * S' / S) or `context_tokens` (W tokens, clipped to the context). This
benchmark measures which rule says what a window costs. One proxy (conf/proxy/tiny.yaml: 2 layers x 64 wide, 4
heads) is trained at S = 64, 128 and 256 positions, dense and with local_global windows W = 8, 16, 32 (W <= S/4,
no global tokens, no gate), at seeds 0 and 1: 3 dense + 8 windowed configurations, 22 runs. Every run sees the same
tokens: tiny's budget (1,048,576) at tiny's 1,024 tokens a step, so the batch is 16, 8 and 4 sequences; the
validation set holds tiny's 128 sequences at every context (eval_batches x S/64), so each context is scored on the
same number of recall queries. The task is sparse_attn's default, long_range (conf/task/long_range.yaml): half of
each batch stdlib text, half MQAR recall.

How the two halves scale with S, and which rule each favours by construction:
- Recall (MQAR, nas/evaluation/data.py): 4 pairs a sequence, each queried once at a distance drawn log-uniformly
  from 4 to S - 2. A window of W reaches a query at distance d <= W (a key at p, its value at p + 1, the query at
  p + d; a query at i sees the positions j with i - W < j <= i), so the share beyond it is about 1 - ln((W+1)/4) /
  ln((S-1)/4) (beyond_window; tests/test_context_ladder.py checks it against sampled batches): log-uniform
  distances are not spread evenly over the context, so neither rule keeps that share fixed (1/8 of the context:
  0.71, 0.58, 0.49 at 64, 128, 256; 16 tokens: 0.48, 0.58, 0.65). The report prints this share per
  configuration and the verdict the spreads of it alone would give (a slight lean to the count rule), beside the
  measured one. Also, every sequence holds 4 queries whatever S, so at equal tokens a longer context trains on
  fewer recall queries (1/4 as many at 256 as at 64): dense recall itself may fall with S.
- Text (bpb_late, nas/evaluation/scoring.py): bits per byte over positions S/2 .. S-1. Its dependencies are in tokens (a
  byte's predictability from what lies d bytes back does not know S), so a window of W tokens loses the same
  near context at every S, and the far context it loses matters less the farther it is: the count rule by
  construction, up to the extra far context the late half has at larger S.

The cost of a window is its quality minus the dense quality at the same context and seed, for the task's quality
(nas.evaluation.scoring.quality: bpb_late + mqar_error), recall (mqar_error = 1 - mqar_acc) and text (bpb_late)
each. Each rule says which configurations are equivalent: equal share W/S ((8,64), (16,128), (32,256); (16,64),
(32,128); (8,128), (16,256)), or equal count W (8 and 16 at 64, 128, 256; 32 at 128, 256). The statistic, without a
fit: per rule, the mean absolute difference of the seed-mean cost over every pair of configurations that rule calls
equivalent (its spread); the noise: two standard errors of a difference of two seed-mean costs, from the seed
standard deviation of a cost pooled over the windowed configurations. The rule whose spread is lower by more than
the noise wins; otherwise the ladder is undecided at this proxy and the default (context_share) stays. At tiny's 1M
tokens the dense model's recall beyond 16 of 64 positions is marginal (conf/proxy/tiny_2m.yaml), so recall costs may
sit near the noise; `--proxy tiny_2m` runs the ladder at twice the tokens (twice the wall).

Every run is appended to benchmarks/results/context_ladder_runs.jsonl (keyed as benchmarks/fidelity.py keys its
runs: role "ladder", task, knobs, seed, proxy sizes), so the ladder resumes where it stopped; the report depends
only on that log. Wall: 22 runs x 1,024 steps. A step (1,024 tokens, one thread) took about 95 ms at every context,
dense at 256 positions as window 16 at 64, timed on the 2-core machine under load 4.4 (2026-12-03), where the
ladder would take about 36 min on one thread and 20-40 min on 2 workers; quiet, tiny's ~35 s a run (conf/proxy/
tiny.yaml) makes it about 13 min on one thread, 7 on two. The progress lines print each run's wall.
Last line: `context_ladder rule=<context_share|context_tokens|undecided> share_spread=... count_spread=... noise=...`
then the same three figures and verdict for recall_ and text_.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from fractions import Fraction
from itertools import combinations
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import RESULTS, load_runs, run_key, train_one

RUNS = RESULTS / "context_ladder_runs.jsonl"
PROXY, TASK, ROLE = "tiny", "long_range", "ladder"
CONTEXTS = (64, 128, 256)
WINDOWS = (8, 16, 32)
MAX_SHARE = Fraction(1, 4)  # a window leaves at least 3/4 of its context out of reach (W <= S/4)
SEEDS = (0, 1)
RULES = ("context_share", "context_tokens")

Cell = tuple[int, int]  # (context S, window W) of a windowed configuration


# ---- the grid and its runs ---------------------------------------------------------------------------------


def cells(contexts: Iterable[int] = CONTEXTS, windows: Iterable[int] = WINDOWS) -> list[Cell]:
    """The windowed configurations of the ladder: every (S, W) with W <= S * MAX_SHARE."""
    return [(s, w) for s in contexts for w in windows if Fraction(w, s) <= MAX_SHARE]


def window_knobs(window: int | None) -> dict[str, Any]:
    """The knobs of a configuration: dense ({}), or a local window without global tokens or a gate."""
    if window is None:
        return {}
    return {"attention": "local_global", "window": window, "global_tokens": 0, "gate": "none"}


def ladder_proxy(base: Any, seq_len: int) -> Any:
    """The proxy `base` at `seq_len` positions, with its tokens per step and its count of validation sequences."""
    tokens = base.tokens_per_step
    if tokens % seq_len or (base.eval_batches * seq_len) % base.seq_len:
        raise ValueError(f"context {seq_len} does not divide proxy {base.name!r}'s {tokens} tokens a step")
    return replace(base, seq_len=seq_len, batch_size=tokens // seq_len,
                   eval_batches=base.eval_batches * seq_len // base.seq_len)


def ladder_runs(base: Any, task: Any, seeds: Iterable[int] = SEEDS) -> list[tuple]:
    """(key, role, proxy dict, task dict, knobs, seed) per run, as benchmarks/fidelity.py's train_one takes them:
    the longest context first (its runs are the longest), dense before its windows."""
    out = []
    for s in sorted(CONTEXTS, reverse=True):
        proxy = asdict(ladder_proxy(base, s))
        for w in [None, *(w for cs, w in cells() if cs == s)]:
            knobs = window_knobs(w)
            out += [(run_key(ROLE, task.to_dict(), knobs, seed, proxy), ROLE, proxy, task.to_dict(), knobs, seed)
                    for seed in seeds]
    return out


def train_missing(jobs: list[tuple], workers: int, runs_path: Path, runs: dict[str, dict[str, Any]],
                  device: str) -> None:
    """Train every unrecorded run, `workers` at a time on one thread each, appending each to the log as it ends."""
    todo = [j for j in jobs if j[0] not in runs]
    if not todo:
        return
    print(f"context ladder: {len(todo)} of {len(jobs)} runs to train ({workers} at a time, 1 thread each)", flush=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(train_one, key, role, p, task, knobs, seed, 1, device)
                   for key, role, p, task, knobs, seed in todo]
        for n, done in enumerate(as_completed(futures), 1):
            row = done.result()
            with runs_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            runs[row["key"]] = row
            arch = row["arch"]
            window = f"window {arch['window']}" if row["knobs"] else "dense"
            print(f"  [{n}/{len(todo)}] S={arch['seq_len']:<3} {window:9s} seed {row['seed']} "
                  f"quality={row['quality']:.4f} mqar_acc={row['metrics']['mqar_acc']:.3f} "
                  f"bpb_late={row['metrics']['bpb_late']:.4f} {row['wall_s']:.0f}s", flush=True)


# ---- the statistic (pure: tests/test_context_ladder.py) ----------------------------------------------------


def equivalence_classes(rule: str, grid: Iterable[Cell]) -> list[list[Cell]]:
    """The configurations `rule` calls equivalent, as classes of two or more: equal W/S (context_share) or equal
    W (context_tokens)."""
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is invalid: expected one of {', '.join(RULES)}")
    groups: dict[Any, list[Cell]] = {}
    for s, w in grid:
        groups.setdefault(Fraction(w, s) if rule == "context_share" else w, []).append((s, w))
    return [sorted(g) for _, g in sorted(groups.items()) if len(g) > 1]


def spread(cost: Mapping[Cell, float], classes: list[list[Cell]]) -> float:
    """Mean absolute difference of the cost over every pair of configurations within a class (nan: no pair)."""
    diffs = [abs(cost[a] - cost[b]) for group in classes for a, b in combinations(group, 2)]
    return sum(diffs) / len(diffs) if diffs else math.nan


def cost_noise(seed_costs: Mapping[Cell, list[float]]) -> tuple[float, float, int]:
    """(two standard errors of a difference of two seed-mean costs, the seed sd of a cost pooled over the
    configurations, its degrees of freedom); nan and 0 dof when no configuration has two seeds."""
    dof = sum(len(c) - 1 for c in seed_costs.values() if c)
    if dof == 0:
        return math.nan, math.nan, 0
    ss = sum((x - sum(c) / len(c)) ** 2 for c in seed_costs.values() for x in c)
    sd = math.sqrt(ss / dof)
    n = min(len(c) for c in seed_costs.values() if c)  # the fewest seeds of any configuration: the widest error
    return 2 * sd * math.sqrt(2 / n), sd, dof


def verdict(share_spread: float, count_spread: float, noise: float) -> str:
    """The rule whose equivalence classes are tighter by more than `noise`, else "undecided"."""
    if any(math.isnan(x) for x in (share_spread, count_spread, noise)):
        return "undecided"
    if share_spread + noise < count_spread:
        return "context_share"
    if count_spread + noise < share_spread:
        return "context_tokens"
    return "undecided"


def decide(seed_costs: Mapping[Cell, list[float]]) -> dict[str, Any]:
    """From per-seed costs of each windowed configuration: its mean cost, both rules' spreads, the noise and the
    verdict."""
    mean = {c: sum(v) / len(v) for c, v in seed_costs.items()}
    noise, sd, dof = cost_noise(seed_costs)
    share, count = (spread(mean, equivalence_classes(rule, mean)) for rule in RULES)
    return {"cost": mean, "share_spread": share, "count_spread": count, "noise": noise, "sd": sd, "dof": dof,
            "rule": verdict(share, count, noise)}


def beyond_window(window: int, seq_len: int, min_distance: int, max_distance: int | None) -> float:
    """Share of MQAR queries a window of `window` cannot reach (distance > window) when distances are drawn
    log-uniformly from [min_distance, min(max_distance or S, S - 2)] (nas.evaluation.data.mqar_batch's law)."""
    hi = min(max_distance or seq_len, seq_len - 2)
    within = (math.log(window + 1) - math.log(min_distance)) / (math.log(hi + 1) - math.log(min_distance))
    return 1.0 - min(1.0, max(0.0, within))


# ---- the report ---------------------------------------------------------------------------------------------

MEASURES: dict[str, tuple[str, Callable[[dict[str, Any]], float]]] = {  # name -> (what it is, its value in a run)
    "quality": ("task quality (bpb_late + mqar_error)", lambda r: r["quality"]),
    "recall": ("recall error (1 - mqar_acc)", lambda r: 1.0 - r["metrics"]["mqar_acc"]),
    "text": ("late-position bits per byte (bpb_late)", lambda r: r["metrics"]["bpb_late"]),
}


def report(base: Any, task: Any, runs: dict[str, dict[str, Any]]) -> list[str]:
    """The ladder's tables and verdicts from the recorded runs; the summary line last."""
    grid = cells()
    keys = {(s, w, seed): run_key(ROLE, task.to_dict(), window_knobs(w), seed, asdict(ladder_proxy(base, s)))
            for s in CONTEXTS for w in [None, *WINDOWS] for seed in SEEDS if w is None or (s, w) in grid}
    missing, total = sum(k not in runs for k in keys.values()), len(keys)
    if missing:
        flag = "" if base.name == PROXY else f" --proxy {base.name}"
        return [f"context ladder: {total - missing} of {total} runs recorded (python benchmarks/context_ladder.py"
                f"{flag} trains the rest)", "context_ladder rule=undecided share_spread=nan count_spread=nan noise=nan"]
    out = [f"## context ladder: proxy {base.name} ({base.n_layers} layers x {base.d_model} wide, {base.n_heads} "
           f"heads), {base.budget_tokens:,} tokens a run at every context ({base.tokens_per_step:,} a step), task "
           f"{task.name}, seeds {', '.join(map(str, SEEDS))}",
           "cost = the configuration's value minus dense's at the same context and seed (mean over seeds); beyond = "
           "share of recall queries farther than the window (MQAR's log-uniform distances)",
           "| S | batch | W | W/S | beyond | quality | cost | recall error | cost | bpb_late | cost |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    values = {m: {(s, w): [get(runs[keys[(s, w, seed)]]) for seed in SEEDS]
                  for s in CONTEXTS for w in [None, *WINDOWS] if w is None or (s, w) in grid}
              for m, (_, get) in MEASURES.items()}
    seed_costs = {m: {c: [x - d for x, d in zip(v[c], v[(c[0], None)])] for c in grid} for m, v in values.items()}
    decided = {m: decide(sc) for m, sc in seed_costs.items()}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    for s in CONTEXTS:
        for w in [None, *(w for cs, w in grid if cs == s)]:
            row = [f"{s}", f"{ladder_proxy(base, s).batch_size}", "dense" if w is None else f"{w}",
                   "-" if w is None else f"1/{s // w}",
                   "-" if w is None else f"{beyond_window(w, s, task.mqar.min_distance, task.mqar.max_distance):.2f}"]
            for m in MEASURES:
                row += [f"{mean(values[m][(s, w)]):.4f}", "-" if w is None else f"{decided[m]['cost'][(s, w)]:+.4f}"]
            out.append("| " + " | ".join(row) + " |")
    out.append("")
    for s in CONTEXTS:
        dense = values["quality"][(s, None)]
        configs = [values["quality"][(cs, w)] for cs, w in [(s, None), *(c for c in grid if c[0] == s)]]
        dof = sum(len(q) - 1 for q in configs)
        sd = math.sqrt(sum((x - mean(q)) ** 2 for q in configs for x in q) / dof)
        out.append(f"seed noise at S={s}: dense quality {' / '.join(f'{q:.4f}' for q in dense)} (spread "
                   f"{max(dense) - min(dense):.4f}); quality sd pooled over its {len(configs)} configurations "
                   f"{sd:.4f} (dof {dof})")
    out.append("")
    for rule, label in (("context_share", "equal share"), ("context_tokens", "equal count")):
        for group in equivalence_classes(rule, grid):
            tag = f"W/S=1/{group[0][0] // group[0][1]}" if rule == "context_share" else f"W={group[0][1]}"
            out.append(f"{label} {tag}: " + "; ".join(
                f"({s},{w}) " + " ".join(f"{m}{decided[m]['cost'][(s, w)]:+.4f}" for m in MEASURES)
                for s, w in group))
    out.append("")
    out.append("| measure | share spread | count spread | noise (2 se of a cost difference) | cost seed sd (dof) | "
               "verdict |")
    out.append("|---|---:|---:|---:|---:|---|")
    for m, (what, _) in MEASURES.items():
        d = decided[m]
        out.append(f"| {what} | {d['share_spread']:.4f} | {d['count_spread']:.4f} | {d['noise']:.4f} | "
                   f"{d['sd']:.4f} ({d['dof']}) | {d['rule']} |")
    beyond = {c: beyond_window(c[1], c[0], task.mqar.min_distance, task.mqar.max_distance) for c in grid}
    by_design = [spread(beyond, equivalence_classes(rule, grid)) for rule in RULES]
    out.append(f"recall by construction (the share of queries beyond the window, no noise): share spread "
               f"{by_design[0]:.3f}, count spread {by_design[1]:.3f}: leans to "
               f"{RULES[0] if by_design[0] < by_design[1] else RULES[1]}")
    rule = decided["quality"]["rule"]
    out.append(f"verdict: {rule}" + (" at this proxy: nas/knobs.py's default (context_share) stays"
                                     if rule == "undecided" else ""))
    return [*out, summary(decided)]


def summary(decided: Mapping[str, Mapping[str, Any]]) -> str:
    """The last line: the task quality's verdict and figures, then recall's and text's."""
    def figures(m: str, prefix: str) -> str:
        d = decided[m]
        return (f"{prefix}rule={d['rule']} {prefix}share_spread={d['share_spread']:.4f} "
                f"{prefix}count_spread={d['count_spread']:.4f} {prefix}noise={d['noise']:.4f}")

    return "context_ladder " + " ".join(figures(m, "" if m == "quality" else f"{m}_") for m in MEASURES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="runs trained at once, one thread each")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, a scratch run log: checks the machinery")
    parser.add_argument("--report-only", action="store_true", help="report the recorded runs, train nothing")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: where the runs train")
    parser.add_argument("--proxy", default=PROXY, help="the proxy whose sizes and budget climb the ladder")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f"--workers={args.workers} is invalid: expected an integer >= 1")
    from nas.evaluation.data import load_task
    from nas.evaluation.proxy import load_proxy

    try:
        base = load_proxy(args.proxy)
        if base.evaluation != "scratch" or base.min_context is not None:
            raise ValueError("expected a proxy trained from scratch at one context (evaluation: scratch, "
                             "min_context: null)")
        for s in CONTEXTS:
            ladder_proxy(base, s)
    except ValueError as err:
        parser.error(f"--proxy {args.proxy}: {err}")
    task, runs_path = load_task(TASK), RUNS
    if args.quick:
        base = replace(base, budget_tokens=8 * base.tokens_per_step, rungs=1, eval_batches=1)
        runs_path = Path(os.environ.get("TMPDIR", "/tmp")) / "nas-context-ladder-quick.jsonl"
        if not args.report_only:
            runs_path.unlink(missing_ok=True)
    runs = load_runs(runs_path)
    start = time.perf_counter()
    if not args.report_only:
        runs_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; log {runs_path}")
        train_missing(ladder_runs(base, task), args.workers, runs_path, runs, args.device)
    lines = report(base, task, runs)
    if not args.report_only:
        lines.insert(-1, f"wall {time.perf_counter() - start:.0f} s this run")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
