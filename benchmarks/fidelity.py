"""Proxy fidelity per search space: a fixed panel ranked by the default proxy and by its reference.

    python benchmarks/fidelity.py --space sparse_attn --workers 2     # one space (the recorded runs)
    python benchmarks/fidelity.py                                      # report every space (trains nothing)
    python benchmarks/fidelity.py --space sparse_attn --min-context 32 # the same against context-growing rungs
    python benchmarks/fidelity.py --space precision --proxy-seeds 3    # the proxy's quality averaged over 3 seeds
    python benchmarks/fidelity.py --space precision --noise-seeds 2    # the dense baseline at 2 seeds, both sizes
    python benchmarks/fidelity.py --quick                              # smoke run of the machinery (tiny budgets)

For each space (sparse_attn, head_grouping, sharing, precision), every configuration of a fixed panel spanning
the space is trained at the default proxy (conf/proxy/tiny.yaml) and at its reference (nas/reference.py: 4x
depth, 4x context, 8x tokens), both on the space's default task (the space file's defaults list) with the
same seed, and scored with the task's objective. The panel is written in proxy units; a configuration carries
to the reference by the one rule of nas/knobs.py. The reference's dense configuration must itself pass the
space's adequacy checks (nas/adequacy.py); a reference that fails them is reported, and its tau is not a
fidelity figure.

Every finished run is appended to benchmarks/results/fidelity_runs.jsonl (keyed by role, task, knobs, seed
and the proxy's sizes), so the benchmark resumes where it stopped and a space can be measured in several
sittings. Prints a table per space: proxy and reference quality and rank, Kendall tau-b, top-3 agreement.
Last line: `fidelity tau_min=... tau_sparse_attn=... tau_head_grouping=... tau_sharing=... tau_precision=...`
(`nan` for a space not yet measured).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

SPACES = ("sparse_attn", "head_grouping", "sharing", "precision")
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "fidelity_runs.jsonl"


def _lg(window: int, global_tokens: int, gate: str = "none") -> dict[str, Any]:
    return {"attention": "local_global", "window": window, "global_tokens": global_tokens, "gate": gate}


def _prec(attention: str, ffn: str, embed: str = "fp32", adaptive: str | None = None) -> dict[str, Any]:
    p = {"attention": attention, "ffn": ffn, "embed": embed}
    return {"precision": {**p, "adaptive_format": adaptive} if adaptive else p}


PANELS: dict[str, list[dict[str, Any]]] = {  # knobs in the proxy's units (64 positions, 4 heads)
    "sparse_attn": [{}, _lg(4, 0), _lg(4, 4), _lg(6, 2, "dynamic"), _lg(8, 0), _lg(8, 2), _lg(11, 4, "dynamic"),
                    _lg(16, 0), _lg(16, 4)],
    "head_grouping": [{}, {"kv_heads": 2}, {"kv_heads": 1}, {"kv_heads": 2, "group_share": "qkv"},
                      {"kv_heads": 1, "group_share": "qkv"}],  # every distinct configuration at 4 heads
    "sharing": [{}, {"sharing": "all", "sharing_scope": "both"}, {"sharing": "all", "sharing_scope": "ffn"},
                {"sharing": "all", "sharing_scope": "attention"}, {"sharing": "adjacent", "sharing_scope": "ffn"},
                {"sharing": "cycle", "sharing_scope": "ffn"}, {"sharing": "cycle_rev", "sharing_scope": "attention"},
                {"sharing": "adjacent", "sharing_scope": "both"},
                {"sharing": "ffn_block_diag", "sharing_scope": "ffn"}],
    "precision": [{}, _prec("bf16", "bf16", "bf16"), _prec("fp16", "fp16"), _prec("fp32", "fp8_e4m3"),
                  _prec("fp32", "fp8_e5m2"), _prec("fp8_e4m3", "fp8_e4m3"), _prec("bf16", "adaptive", "fp32", "fp8_e5m2"),
                  _prec("fp8_e5m2", "fp8_e5m2")],  # adaptive with e5m2 is the recipe's own assignment
}


def _non_default(data: dict[str, Any], cls: type) -> dict[str, Any]:
    """The fields of a dataclass dict that differ from the class defaults (new default fields keep keys stable)."""
    defaults = asdict(cls())
    return {k: v for k, v in data.items() if v != defaults.get(k)}


def run_key(role: str, task: dict[str, Any], knobs: dict[str, Any], seed: int, proxy: dict[str, Any]) -> str:
    """Identity of one training run (the task without its name: equal tasks share runs)."""
    from nas.data import MQARSpec, TaskSpec
    from nas.proxy import ProxySpec

    task = {**_non_default(task, TaskSpec), "mqar": _non_default(task["mqar"], MQARSpec)}
    task.pop("name", None)
    return json.dumps({"role": role, "task": task, "knobs": knobs, "seed": seed,
                       "proxy": _non_default(proxy, ProxySpec)}, sort_keys=True)


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

    from nas.data import TaskSpec
    from nas.objective import quality
    from nas.proxy import ProxySpec, proxy_arch, train_proxy

    torch.set_num_threads(threads)
    spec, task_spec = ProxySpec.from_dict(proxy), TaskSpec.from_dict(task)
    start = time.perf_counter()
    reports = list(train_proxy(knobs, spec, task_spec, seed=seed, threads=threads, device=device))
    final = reports[-1]
    return {"key": key, "role": role, "proxy": spec.name, "task": task_spec.name, "knobs": knobs, "seed": seed,
            "arch": proxy_arch(knobs, spec).to_dict(), "quality": quality(final, task_spec),
            "metrics": final.metrics, "wall_s": time.perf_counter() - start, "device": device}


def space_proxy(space: str, base: Any, name: str | None = None) -> Any:
    """The space's default proxy (its defaults list, else tiny; `name` overrides it) with the rungs, evaluation and
    context growth of `base`, its steps scaled as `base`'s are from the tiny proxy's (1 unless --quick)."""
    from nas.proxy import load_proxy
    from nas.space import default_choice

    proxy = replace(load_proxy(name or default_choice(space, "proxy") or "tiny"), min_context=base.min_context)
    steps = max(1, round(proxy.budget_tokens * base.budget_tokens / load_proxy("tiny").budget_tokens
                         / proxy.tokens_per_step))
    return replace(proxy, budget_tokens=steps * proxy.tokens_per_step, rungs=base.rungs,
                   eval_batches=base.eval_batches)


def top_k_agreement(a: list[float], b: list[float], k: int = 3) -> float:
    """Share of the k best (lowest) of `a` that are among the k best of `b`."""
    best = lambda xs: set(sorted(range(len(xs)), key=lambda i: (xs[i], i))[:k])  # noqa: E731
    return len(best(a) & best(b)) / k


def resolved_pair_agreement(a: list[float], b: list[float], noise: float) -> tuple[int, int]:
    """Of the pairs that `b` separates by more than `noise`, how many `a` orders the same way: (agree, pairs)."""
    pairs = [(i, j) for i in range(len(b)) for j in range(i + 1, len(b)) if abs(b[i] - b[j]) > noise]
    return sum((a[i] < a[j]) == (b[i] < b[j]) and a[i] != a[j] for i, j in pairs), len(pairs)


def reference_adequacy(space: str, proxy: Any, reference: Any, task: Any, dense_metrics: dict[str, float]
                       ) -> list[dict]:
    """The space's adequacy checks applied to the reference's dense run (windows carried to its context)."""
    from nas import adequacy
    from nas.proxy import proxy_arch
    from nas.space import load, path_of

    spec = load(path_of(space), proxy_arch({}, proxy))
    names = {p.name for p in spec.params}
    checks: list[dict] = []
    if names & set(adequacy.ATTENTION_KNOBS):
        scale = reference.seq_len // proxy.seq_len
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
    from nas.data import load_task
    from nas.reference import reference_proxy
    from nas.space import default_choice

    task = load_task(default_choice(space, "task") or "lm")
    proxy = space_proxy(space, choice.base, choice.proxy)
    reference_of = choice.reference_for(space)
    reference = reference_proxy(space_proxy(space, choice.base, reference_of) if reference_of else proxy)
    sizes = {"proxy": asdict(proxy), "reference": asdict(reference)}
    todo = [(run_key(role, task.to_dict(), knobs, seed, p), role, p, task.to_dict(), knobs, seed)
            for knobs in PANELS[space] for role, p in sizes.items() for seed in choice.seeds(role, space)]
    return task, proxy, reference, todo


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


def report(space: str, choice: Choice, runs: dict[str, dict[str, Any]], out: list[str]) -> float | None:
    """Print one recorded space's table; its tau-b."""
    from nas.reference import describe
    from nas.export.fidelity import kendall_tau_b

    task, proxy, reference, _ = panel_runs(space, choice)
    panel = PANELS[space]
    rows = [(knobs, recorded_runs(runs, "proxy", task, knobs, proxy, choice.seeds("proxy", space)),
             recorded_runs(runs, "reference", task, knobs, reference, choice.seeds("reference", space)))
            for knobs in panel]
    mean = lambda rs: sum(r["quality"] for r in rs) / len(rs)  # noqa: E731
    pq, rq = [mean(p) for _, p, _ in rows], [mean(r) for _, _, r in rows]
    tau, top3 = kendall_tau_b(pq, rq), top_k_agreement(pq, rq)
    rank = lambda xs: [sorted(xs).index(x) + 1 for x in xs]  # noqa: E731
    out.append(f"\n## {space} (task {task.name}; {len(panel)} configurations, {choice.describe_seeds(space)})")
    out.append(f"proxy     {describe(proxy)}; wall {sum(r['wall_s'] for _, p, _ in rows for r in p):.0f} s")
    out.append(f"reference {describe(reference)}; wall {sum(r['wall_s'] for _, _, ref in rows for r in ref):.0f} s")
    out.append("| configuration | proxy quality | rank | reference quality | rank |")
    out.append("|---|---:|---:|---:|---:|")
    for (knobs, _, _), p, pr, r, rr in zip(rows, pq, rank(pq), rq, rank(rq)):
        out.append(f"| {json.dumps(knobs) if knobs else 'dense baseline'} | {p:.4f} | {pr} | {r:.4f} | {rr} |")
    checks = reference_adequacy(space, proxy, reference, task, rows[0][2][0]["metrics"])
    for c in checks:
        out.append(f"reference adequacy: {c['name']} = {c['measured']:.3f} (needs {c['threshold']:.3f}): "
                   f"{'pass' if c['passed'] else 'FAIL'}")
    shown = range(choice.seed, choice.seed + NOISE_SEEDS_SHOWN)
    out.extend(noise_lines({role: recorded_runs(runs, role, task, {}, size, shown)
                            for role, size in (("proxy", proxy), ("reference", reference))}))
    sd = pooled_seed_sd([recorded_runs(runs, "reference", task, knobs, reference, shown) for knobs in panel])
    if sd is not None:
        # two standard errors of a difference of two means over the reference's seeds
        margin = 2 * sd[0] * math.sqrt(2 / choice.n_seeds("reference", space))
        agree, pairs = resolved_pair_agreement(pq, rq, margin)
        out.append(f"reference seed sd {sd[0]:.4f} (pooled, dof {sd[1]}): {pairs} of "
                   f"{len(rq) * (len(rq) - 1) // 2} pairs differ by more than two standard errors ({margin:.4f}); "
                   f"the proxy orders {agree} of them the same way")
    out.append(f"Kendall tau-b = {tau if tau is None else f'{tau:.3f}'}; top-3 agreement = {top3:.2f}"
               + ("" if all(c["passed"] for c in checks) else " (the reference fails adequacy: not a fidelity figure)"))
    return tau


NOISE_SEEDS_SHOWN = 10  # recorded dense runs at up to this many seeds are reported


def recorded_runs(runs: dict[str, dict[str, Any]], role: str, task: Any, knobs: dict[str, Any], size: Any,
                  seeds: range) -> list[dict[str, Any]]:
    """The recorded runs of one configuration in one role at `size` (a proxy spec), at those of `seeds` run."""
    keys = (run_key(role, task.to_dict(), knobs, seed, asdict(size)) for seed in seeds)
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


def main() -> None:
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
    args = parser.parse_args()

    from nas.proxy import load_proxy

    proxy = replace(load_proxy("tiny"), min_context=args.min_context)
    runs_path = RUNS
    if args.quick:
        proxy = replace(proxy, budget_tokens=8 * proxy.tokens_per_step, rungs=1, eval_batches=1)
        runs_path = Path(os.environ.get("TMPDIR", "/tmp")) / "nas-fidelity-quick.jsonl"
        runs_path.unlink(missing_ok=True)
    runs_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads 1 per run")
    taus: dict[str, float | None] = {}
    out: list[str] = []
    start = time.perf_counter()
    runs = load_runs(runs_path)
    for flag, entries in (("proxy-seeds", args.proxy_seeds), ("reference-seeds", args.reference_seeds),
                          ("noise-seeds", [str(args.noise_seeds)])):
        for entry in entries:
            space, sep, n = entry.rpartition("=")
            if not n.isdigit() or int(n) < 1 or (sep and space not in SPACES):
                parser.error(f"--{flag}={entry} is invalid: expected N or SPACE=N with an integer N >= 1 and SPACE "
                             f"one of {', '.join(SPACES)}")
    choice = Choice(proxy, args.seed, args.proxy, tuple(args.reference_of or ()), tuple(args.proxy_seeds),
                    tuple(args.reference_seeds), args.noise_seeds)
    if args.quick or (args.space is not None and not args.report_only):
        train_missing(args.space or list(SPACES), choice, args.workers, runs_path, runs, args.device, args.role)
    for space in args.space or SPACES:
        todo = panel_runs(space, choice)[3]
        if not all(t[0] in runs for t in todo):
            done = sum(t[0] in runs for t in todo)
            out.append(f"\n## {space}: not measured yet, {done} of {len(todo)} runs recorded "
                       f"(python benchmarks/fidelity.py --space {space}{choice.seed_flags(space)} trains the rest)")
            taus[space] = None
            continue
        taus[space] = report(space, choice, runs, out)
    print("\n".join(out))
    print(f"\nwall {time.perf_counter() - start:.0f} s this run")
    measured = [t for t in taus.values() if t is not None]
    fmt = lambda t: "nan" if t is None else f"{t:.3f}"  # noqa: E731
    print(f"fidelity tau_min={fmt(min(measured) if measured else None)} "
          + " ".join(f"tau_{s}={fmt(taus.get(s))}" for s in SPACES))


if __name__ == "__main__":
    main()
