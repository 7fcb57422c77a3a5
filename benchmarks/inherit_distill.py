"""Inherit-and-distill on the sparse_attn panel, against the recorded reference and the free "more FLOPs = better".

    python benchmarks/inherit_distill.py --proxy inherit_long                      # train what is missing, report
    python benchmarks/inherit_distill.py --proxy inherit_long --set distill_kl_weight=0 --tag nokl   # a lever
    python benchmarks/inherit_distill.py --proxy inherit_long --carry share        # windows x4 (nas/knobs.py)
    python benchmarks/inherit_distill.py --report-only                             # every recorded variant

Each configuration of benchmarks/fidelity.py's sparse_attn panel (knobs in tiny_2m's units: 64 positions) is
evaluated by an inherit proxy (conf/proxy/<name>.yaml with evaluation: inherit; --set KEY=VALUE overrides its
fields) on the space's task (long_range), one run at a time on one thread. `--carry raw` hands the panel's knobs
to the proxy as they are (a window of W positions at the proxy's context: what the recorded reference trains,
window W at 256 positions); `--carry share` keeps each window's share of the context (nas/knobs.py: W x 4 at 256
positions). Every run is appended to benchmarks/results/inherit_runs.jsonl (resumes). The report ranks each
recorded variant against the recorded 8-layer, 256-position reference (fidelity_runs.jsonl, role reference,
proxy tiny-reference): Kendall tau-b, the free ranking's tau-b (flops_ratio at the gpt_1b_32k target, more =
better), the equal-compute pairs (within 5% FLOPs) each orders right, the text half's order (late bpb).
Last line: `inherit_distill best=... tau=... free_tau=... iso_right=... free_iso_right=... trial_s=...`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import PANELS, RUNS, _non_default, load_runs, ready_parent

RESULTS = Path(__file__).resolve().parent / "results"
INHERIT_RUNS = RESULTS / "inherit_runs.jsonl"
SPACE, TASK, TARGET, UNITS = "sparse_attn", "long_range", "gpt_1b_32k", "tiny_2m"
ISO = 0.05  # configurations within 5% FLOPs of each other are of equal compute


def variant_key(proxy: Any, carry: str, seed: int = 0) -> str:
    """Identity of one proxy variant (its non-default fields, the carry rule and a seed other than 0)."""
    from nas.evaluation.proxy import ProxySpec

    return json.dumps({"proxy": _non_default(asdict(proxy), ProxySpec), "carry": carry}
                      | ({"seed": seed} if seed else {}), sort_keys=True)


def trial_arch(knobs: dict[str, Any], proxy: Any, carry: str) -> Any:
    """The panel configuration at the proxy: as is (raw) or with its window's share of the context (share)."""
    from nas.evaluation.proxy import load_proxy, proxy_arch, proxy_sizes

    source = {**proxy_sizes(load_proxy(UNITS)), **knobs} if carry == "share" else knobs
    return proxy_arch(source, proxy)


def run_one(knobs: dict[str, Any], proxy: Any, carry: str, seed: int) -> dict[str, Any]:
    """Train one panel configuration with the inherit proxy; its quality, metrics, wall time and parent."""
    from nas.evaluation.data import load_task
    from nas.evaluation.proxy import train_proxy
    from nas.evaluation.scoring import quality

    task = load_task(TASK)
    arch = trial_arch(knobs, proxy, carry)
    start = time.perf_counter()
    reports = list(train_proxy(arch, proxy, task, seed=seed, threads=1, device="cpu"))
    return {"variant": variant_key(proxy, carry, seed), "tag": None, "knobs": knobs, "seed": seed,
            "arch": arch.to_dict(),
            "quality": quality(reports[-1], task), "metrics": reports[-1].metrics,
            "rungs": [quality(r, task) for r in reports], "wall_s": time.perf_counter() - start,
            "parent": reports[-1].parent}


def parent_wall(proxy: Any, seed: int) -> float:
    """Train (or find) the proxy's parent first, so no trial's wall time includes it; its recorded training time."""
    from nas.evaluation.data import load_task

    return ready_parent(proxy, load_task(TASK), seed)[1]


def flops_ratios() -> list[float]:
    """The panel's flops_ratio at the target (its knobs in tiny_2m's units, as a search costs them)."""
    from nas.cost import estimate
    from nas.evaluation.proxy import load_proxy, proxy_arch

    units = load_proxy(UNITS)
    return [estimate(proxy_arch(k, units), TARGET).flops_ratio for k in PANELS[SPACE]]


def reference_qualities() -> list[dict[str, Any]]:
    """The recorded reference run of each panel configuration (seed 0)."""
    by_knobs = {json.dumps(r["knobs"], sort_keys=True): r for r in load_runs(RUNS).values()
                if r["role"] == "reference" and r["proxy"] == "tiny-reference" and r["task"] == TASK and r["seed"] == 0}
    return [by_knobs[json.dumps(k, sort_keys=True)] for k in PANELS[SPACE]]


def iso_pairs(flops: list[float]) -> list[tuple[int, int]]:
    """Pairs of panel configurations within ISO of each other in FLOPs."""
    n = len(flops)
    return [(i, j) for i in range(n) for j in range(i + 1, n)
            if abs(flops[i] - flops[j]) <= ISO * max(flops[i], flops[j])]


def right(a: list[float], b: list[float], pairs: list[tuple[int, int]]) -> int:
    """How many of `pairs` `a` orders as `b` does (lower = better)."""
    return sum((a[i] < a[j]) == (b[i] < b[j]) and a[i] != a[j] for i, j in pairs)


def borrowed(variant: str, knobs: dict[str, Any], variants: dict[str, dict[str, dict[str, Any]]]
             ) -> dict[str, Any] | None:
    """For a configuration without a gate: the run of a variant that differs from `variant` only in gate_init."""
    if knobs.get("gate") == "dynamic":
        return None
    def strip(v: str) -> dict:
        return {**json.loads(v), "proxy": {k: x for k, x in json.loads(v)["proxy"].items() if k != "gate_init"}}

    for other, by_knobs in variants.items():
        if other != variant and strip(other) == strip(variant) and json.dumps(knobs, sort_keys=True) in by_knobs:
            return by_knobs[json.dumps(knobs, sort_keys=True)]
    return None


def report(runs: list[dict[str, Any]], out: list[str]) -> list[dict[str, Any]]:
    """One table per recorded variant with the whole panel; its summary figures."""
    from nas.study.ranking import kendall_tau_b

    panel = PANELS[SPACE]
    ref = reference_qualities()
    rq = [r["quality"] for r in ref]
    flops = flops_ratios()
    free = [-f for f in flops]  # more compute = better (lower score)
    pairs = iso_pairs(flops)
    free_tau, free_iso = kendall_tau_b(free, rq), right(free, rq, pairs)
    out.append(f"reference: tiny-reference (8 layers x 64, 256 positions, 8M tokens, seed 0); "
               f"free ranking: flops_ratio at {TARGET} (more = better): tau-b {free_tau:.3f}, "
               f"equal-compute pairs right {free_iso}/{len(pairs)}")
    summaries = []
    variants: dict[str, dict[str, dict[str, Any]]] = {}
    for r in runs:
        variants.setdefault(r["variant"], {})[json.dumps(r["knobs"], sort_keys=True)] = r
    for variant, by_knobs in variants.items():
        rows = [by_knobs.get(json.dumps(k, sort_keys=True)) or borrowed(variant, k, variants) for k in panel]
        if any(r is None for r in rows):
            out.append(f"\n{variant}: {sum(r is not None for r in rows)} of {len(panel)} configurations recorded")
            continue
        pq = [r["quality"] for r in rows]
        tau, iso = kendall_tau_b(pq, rq), right(pq, rq, pairs)
        late = {k: rows[i]["metrics"]["bpb_late"] for k, i in (("dense", 0), ("w16", 7), ("w4", 1))}
        wall = sum(r["wall_s"] for r in rows) / len(rows)
        tags = sorted({r.get("tag") or "" for r in rows} - {""})
        out.append(f"\n## {', '.join(tags) or 'untagged'}: {variant}")
        out.append(f"parent {rows[0]['parent'][:12]}; mean trial wall {wall:.0f} s")
        out.append("| configuration | flops_ratio | proxy quality | rank | reference quality | rank |")
        out.append("|---|---:|---:|---:|---:|---:|")
        def rank(xs: list) -> list[int]:
            return [sorted(xs).index(x) + 1 for x in xs]

        for k, r, f, p, pr, q, qr in zip(panel, rows, flops, pq, rank(pq), rq, rank(rq)):
            mark = " (*)" if r["variant"] != variant else ""
            name = json.dumps(k) if k else "dense baseline"
            out.append(f"| {name} | {f:.3f} | {p:.4f}{mark} | {pr} | {q:.4f} | {qr} |")
        if any(r["variant"] != variant for r in rows):
            out.append("(*) a configuration without a gate, which gate_init does not touch: the run of the variant "
                       "that differs only in gate_init (bit-identical by construction)")
        per_rung = [kendall_tau_b([r["rungs"][i] for r in rows], rq) for i in range(len(rows[0]["rungs"]))]
        out.append(f"Kendall tau-b = {tau:.3f} (free ranking {free_tau:.3f}); per rung: "
                   f"{', '.join(f'{t:.3f}' for t in per_rung)}; equal-compute pairs right {iso}/{len(pairs)} "
                   f"(free {free_iso}/{len(pairs)}); late bpb dense {late['dense']:.3f}, window 16 {late['w16']:.3f}, "
                   f"window 4 {late['w4']:.3f}")
        summaries.append({"name": ", ".join(tags) or variant, "tau": tau, "free_tau": free_tau, "iso": iso,
                          "free_iso": free_iso, "pairs": len(pairs), "trial_s": wall, "variant": variant, "q": pq})
    for s in summaries:  # a variant recorded at a second seed: its seed noise and the two seeds' mean
        key = json.loads(s["variant"])
        if key.pop("seed", 0) == 0:
            continue
        first = next((o for o in summaries if o["variant"] == json.dumps(key, sort_keys=True)), None)
        if first is None:
            continue
        diffs = [a - b for a, b in zip(s["q"], first["q"])]
        sd = math.sqrt(sum(d * d for d in diffs) / (2 * len(diffs)))  # pooled over configurations, 2 seeds each
        mean = [(a + b) / 2 for a, b in zip(s["q"], first["q"])]
        out.append(f"\nseed noise ({s['name']} against {first['name']}): pooled seed sd {sd:.4f} "
                   f"(dof {len(diffs)}), dense {first['q'][0]:.4f} / {s['q'][0]:.4f}; the mean of the two seeds "
                   f"ranks at tau-b {kendall_tau_b(mean, rq):.3f}, equal-compute pairs right {right(mean, rq, pairs)}/"
                   f"{len(pairs)}; equal-compute differences "
                   f"{', '.join(f'{mean[i] - mean[j]:+.4f}' for i, j in pairs)} "
                   f"(reference {', '.join(f'{rq[i] - rq[j]:+.4f}' for i, j in pairs)})")
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", default="inherit_long", help="conf/proxy/<name>.yaml (evaluation: inherit)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a proxy field (YAML value), e.g. distill_kl_weight=0")
    parser.add_argument("--carry", choices=("raw", "share"), default="raw", help="how panel windows reach the proxy")
    parser.add_argument("--tag", default=None, help="a short name for this variant in the report")
    parser.add_argument("--only", default=None, help="comma-separated panel indices to train (the rest as recorded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()

    import torch
    import yaml

    from nas.evaluation.proxy import load_proxy

    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other "
          "sessions' jobs), torch threads 1, one run at a time")
    runs = [json.loads(line) for line in INHERIT_RUNS.read_text().splitlines() if line.strip()] \
        if INHERIT_RUNS.exists() else []
    if not args.report_only:
        proxy = load_proxy(args.proxy)
        for entry in args.set:
            key, sep, value = entry.partition("=")
            if not sep or key not in asdict(proxy):
                parser.error(f"--set {entry} is invalid: expected KEY=VALUE with KEY a field of ProxySpec")
            proxy = replace(proxy, **{key: yaml.safe_load(value)})
        if proxy.evaluation != "inherit":
            parser.error(f"--proxy {args.proxy} is invalid: its evaluation is {proxy.evaluation!r}, expected inherit")
        variant = variant_key(proxy, args.carry, args.seed)
        done = {(r["variant"], json.dumps(r["knobs"], sort_keys=True)) for r in runs}
        only = None if args.only is None else {int(i) for i in args.only.split(",")}
        todo = [k for i, k in enumerate(PANELS[SPACE])
                if (variant, json.dumps(k, sort_keys=True)) not in done and (only is None or i in only)]
        if todo:
            print(f"parent: {parent_wall(proxy, args.seed):.0f} s to train (once per proxy, task and seed)", flush=True)
        for knobs in todo:
            row = {**run_one(knobs, proxy, args.carry, args.seed), "tag": args.tag}
            with INHERIT_RUNS.open("a") as f:
                f.write(json.dumps(row) + "\n")
            runs.append(row)
            print(f"  {json.dumps(knobs):70s} quality={row['quality']:.4f} {row['wall_s']:.0f}s", flush=True)
    out: list[str] = []
    summaries = report(runs, out)
    print("\n".join(out))
    if summaries:
        best = max(summaries, key=lambda s: (s["tau"], s["iso"]))
        print(f"\ninherit_distill best={best['name'].replace(' ', '_')} tau={best['tau']:.3f} "
              f"free_tau={best['free_tau']:.3f} iso_right={best['iso']}/{best['pairs']} "
              f"free_iso_right={best['free_iso']}/{best['pairs']} trial_s={best['trial_s']:.0f}")


if __name__ == "__main__":
    main()
