"""Search efficiency of samplers x pruners, replayed on a recorded table (nas/bench/replay.py).

    python benchmarks/search_efficiency.py [--table FILE] [--seeds 50] [--trials 16] [--sweep] [--out NAME]
    python benchmarks/search_efficiency.py record [--space FILE] [--db FILE] [--table FILE] [hydra overrides...]

record: trains every configuration of a finite space once to the full budget with the real search
(pruner=none, one trial at a time unless overridden) and writes the table JSON. The default space is
benchmarks/spaces/sparse_attn_grid.yaml (31 configurations, ~40 s each on one core with the tiny proxy).

replay (the default): per sampler (tpe, nsga2, random; conf/sampler/*.yaml) and seed, the unpruned study of
`--trials` trials sets the budget B (its tokens) and the target (95% of its final hypervolume, the reference
point fixed by the table); each pruner (conf/pruner/*.yaml) then runs a study of the same sampler and seed
until its trials' charged tokens reach B. Per combination: the tokens at which the hypervolume first reaches
the target, as a fraction of B (median and IQR over seeds; 'n/r' when not reached within B), the final
hypervolume as a share of the unpruned one, and trial counts. `--sweep` adds the Pareto pruner's settings
(margin, min_dominators, n_warmup_steps) with the default sampler (tpe). Writes benchmarks/results/NAME.txt and an
offline Plotly page NAME.html (median HV vs compute with IQR bands). Last line:
`search_efficiency pareto_compute_at_95=... best_other_compute_at_95=... none_compute_at_95=...` for the
default sampler (tpe).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nas.bench.replay import (  # noqa: E402
    Table,
    compose_search,
    export_table,
    grid_points,
    hv_curve,
    machine,
    record,
    replay,
    tokens_to_reach,
)
from nas.cli import fail  # noqa: E402
from nas.profiles import read_profile  # noqa: E402
from nas.search.schema import PrunerConf, SamplerConf  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DEFAULT_SPACE = REPO / "benchmarks" / "spaces" / "sparse_attn_grid.yaml"
DEFAULT_TABLE = RESULTS / "replay_sparse_attn_tiny.json"
SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("pareto", "median", "successive_halving", "hyperband")
OTHERS = PRUNERS[1:]  # Optuna's single-objective pruners, on the rung quality alone
GOAL = 0.95  # share of the unpruned run's final hypervolume
GRID = np.linspace(0.0, 1.0, 201)  # compute fractions of the plot
SWEEP = {"margin": (0.0, 0.01, 0.03), "min_dominators": (1, 2, 3), "n_warmup_steps": (0, 200)}  # tpe only


@dataclass
class Baseline:
    """The unpruned study of one sampler and seed: its budget (tokens), final hypervolume and curve."""

    budget: int
    hv: float
    curve: np.ndarray  # HV / hv on GRID
    compute_at_goal: float


@dataclass
class Outcome:
    """One combination over seeds: compute fractions at the goal, final HV shares, trials, pruned, curves."""

    fractions: list[float]
    final: list[float]
    trials: list[int]
    pruned: list[int]
    curves: list[np.ndarray]


def sampler_conf(name: str) -> SamplerConf:
    """The shipped sampler settings (conf/sampler/NAME.yaml)."""
    return SamplerConf(**read_profile("sampler", name)[1])


def pruner_conf(name: str, **settings) -> PrunerConf:
    """The shipped pruner settings (conf/pruner/NAME.yaml), with overrides."""
    return replace(PrunerConf(**read_profile("pruner", name)[1]), **settings)


def on_grid(tokens: list[int], hv: list[float], budget: int, scale: float) -> np.ndarray:
    """The step curve HV/scale sampled at GRID * budget (the HV after the last trial finished by then)."""
    idx = np.searchsorted(np.asarray(tokens, dtype=float), GRID * budget, side="right") - 1
    values = np.concatenate([[0.0], np.asarray(hv)])[idx + 1]
    return values / scale


def baselines(table: Table, sampler: str, seeds: range, n_trials: int) -> dict[int, Baseline]:
    """The unpruned study per seed."""
    out = {}
    for seed in seeds:
        trials = replay(table, sampler_conf(sampler), pruner_conf("none"), seed, n_trials=n_trials)
        tokens, hv = hv_curve(table, trials)
        out[seed] = Baseline(tokens[-1], hv[-1], on_grid(tokens, hv, tokens[-1], hv[-1]),
                             tokens_to_reach(tokens, hv, GOAL * hv[-1]) / tokens[-1])
    return out


def evaluate(table: Table, sampler: str, pruner: PrunerConf, base: dict[int, Baseline]) -> Outcome:
    """Each seed's pruned study on the unpruned budget, against the unpruned study's hypervolume."""
    out = Outcome([], [], [], [], [])
    for seed, b in base.items():
        trials = replay(table, sampler_conf(sampler), pruner, seed, budget_tokens=b.budget)
        tokens, hv = hv_curve(table, trials)
        fraction = tokens_to_reach(tokens, hv, GOAL * b.hv) / b.budget
        out.fractions.append(fraction if fraction <= 1 else math.inf)  # the last trial may end past B
        out.final.append(hv[-1] / b.hv)
        out.trials.append(len(trials))
        out.pruned.append(sum(t.state == "PRUNED" for t in trials))
        out.curves.append(on_grid(tokens, hv, b.budget, b.hv))
    return out


def rung_fidelity(table: Table) -> str:
    """Kendall tau-b between each rung's quality and the final quality over the table: what a pruner can see."""
    from nas.study.ranking import kendall_tau_b

    final = [e.quality for e in table.entries]
    taus = [f"step {r.step} {kendall_tau_b([e.rungs[i].quality for e in table.entries], final):.2f}"
            for i, r in enumerate(table.entries[0].rungs[:-1])]
    return f"rung fidelity (Kendall tau-b of rung vs final quality over the table): {', '.join(taus)}"


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """25th, 50th and 75th percentile; inf (not reached) sorts last and stays inf."""
    finite = np.where(np.isfinite(values), values, 1e9)
    q = np.percentile(finite, [25, 50, 75], method="nearest")
    return tuple(math.inf if v >= 1e9 else float(v) for v in q)


def fmt(x: float) -> str:
    return "n/r" if not math.isfinite(x) else f"{x:.3f}"


def row(label: str, fractions: list[float], final: list[float], trials: list[int], pruned: list[int]) -> str:
    q25, q50, q75 = quartiles(fractions)
    reached = sum(math.isfinite(f) for f in fractions)
    return (f"{label:<44}{fmt(q50):>8}  [{fmt(q25)}, {fmt(q75)}]{'':<2}{reached:>4}/{len(fractions):<4}"
            f"{np.median(final):>9.3f}{np.median(trials):>8.0f}{np.median(pruned):>8.0f}")


HEADER = (f"{'sampler / pruner':<44}{'c@95':>8}  {'[q25, q75]':<16}{'reached':>9}{'HV@B':>9}{'trials':>8}"
          f"{'pruned':>8}")


def run(args: argparse.Namespace) -> None:
    """Replay every combination; print and write the table, the plot and the summary line."""
    table = Table.load(args.table)
    seeds = range(args.seeds)
    t0 = time.perf_counter()
    lines = [f"# python benchmarks/search_efficiency.py --seeds {args.seeds} --trials {args.trials}"
             f"{' --sweep' if args.sweep else ''}  ({time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())})",
             f"replay machine: {machine()}, load {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
             f"table: {Path(args.table).name}, {len(table.entries)} configurations recorded by study "
             f"{table.meta.get('study')!r} (proxy {table.meta.get('proxy', {}).get('name')}, task "
             f"{table.meta.get('task', {}).get('name')}, target {table.meta.get('target')}) on "
             f"{table.meta.get('machine')}; objectives quality, {', '.join(table.compute_keys)}; HV reference "
             f"{tuple(round(r, 4) for r in table.reference)}; one full trial {table.full_tokens} tokens",
             f"budget B = {args.trials} unpruned trials of the same sampler and seed; goal {GOAL:.0%} of its final HV; "
             f"c@95 = tokens to reach the goal / B (median, [IQR] over seeds); HV@B = final HV / unpruned HV",
             rung_fidelity(table), ""]
    print("\n".join(lines), flush=True)
    emit = _emitter(lines)
    results: dict[tuple[str, str], Outcome] = {}
    for sampler in SAMPLERS:
        base = baselines(table, sampler, seeds, args.trials)
        results[sampler, "none"] = Outcome([b.compute_at_goal for b in base.values()], [1.0] * len(base),
                                           [args.trials] * len(base), [0] * len(base),
                                           [b.curve for b in base.values()])
        emit(HEADER if sampler == SAMPLERS[0] else "")
        for pruner in ("none", *PRUNERS):
            if pruner != "none":
                results[sampler, pruner] = evaluate(table, sampler, pruner_conf(pruner), base)
            o = results[sampler, pruner]
            emit(row(f"{sampler} / {pruner}", o.fractions, o.final, o.trials, o.pruned))
        if args.sweep and sampler == "tpe":
            for values in itertools.product(*SWEEP.values()):
                settings = dict(zip(SWEEP, values))
                o = evaluate(table, sampler, pruner_conf("pareto", **settings), base)
                label = f"{sampler} / pareto " + " ".join(f"{k}={v}" for k, v in settings.items())
                emit(row(label, o.fractions, o.final, o.trials, o.pruned))
    emit(f"\nreplay wall time {time.perf_counter() - t0:.0f} s")
    _plot(results, RESULTS / f"{args.out}.html", table)
    emit(f"plot: benchmarks/results/{args.out}.html")
    med = {k: quartiles(o.fractions)[1] for k, o in results.items()}
    best_other = min(med["tpe", p] for p in OTHERS)
    emit(f"search_efficiency pareto_compute_at_95={fmt(med['tpe', 'pareto'])} "
         f"best_other_compute_at_95={fmt(best_other)} none_compute_at_95={fmt(med['tpe', 'none'])}")
    (RESULTS / f"{args.out}.txt").write_text("\n".join(lines) + "\n")


def _emitter(lines: list[str]):
    def emit(text: str) -> None:
        print(text, flush=True)
        lines.append(text)
    return emit


def _plot(results: dict[tuple[str, str], Outcome], path: Path, table: Table) -> None:
    """Median HV (share of the unpruned final HV) vs compute (share of B), IQR bands; one panel per sampler."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from nas.dashboard.pages import PLOTLY_JS, write_plotlyjs

    colors = dict(zip(("none", *PRUNERS), ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a")))
    fig = make_subplots(rows=1, cols=len(SAMPLERS), subplot_titles=SAMPLERS, shared_yaxes=True)
    for col, sampler in enumerate(SAMPLERS, start=1):
        for pruner in ("none", *PRUNERS):
            curves = np.vstack(results[sampler, pruner].curves)
            q25, q50, q75 = np.percentile(curves, [25, 50, 75], axis=0)
            color = colors[pruner]
            fig.add_trace(go.Scatter(x=np.r_[GRID, GRID[::-1]], y=np.r_[q75, q25[::-1]], fill="toself",
                                     fillcolor=color, opacity=0.15, line={"width": 0}, hoverinfo="skip",
                                     showlegend=False, legendgroup=pruner), row=1, col=col)
            fig.add_trace(go.Scatter(x=GRID, y=q50, name=pruner, line={"color": color, "shape": "hv"},
                                     legendgroup=pruner, showlegend=col == 1), row=1, col=col)
        fig.add_hline(y=GOAL, line={"dash": "dot", "color": "gray"}, row=1, col=col)
        fig.update_xaxes(title_text="compute (share of the unpruned budget)", row=1, col=col)
    fig.update_yaxes(title_text="hypervolume (share of the unpruned final)", row=1, col=1)
    fig.update_layout(title=f"Search efficiency on {table.meta.get('study')} ({len(table.entries)} configurations, "
                            f"{len(results['tpe', 'none'].curves)} seeds): median and IQR",
                      template="plotly_white", height=480, width=1400)
    write_plotlyjs(path.parent)
    fig.write_html(path, include_plotlyjs=PLOTLY_JS)


def cmd_record(args: argparse.Namespace) -> None:
    """Record the table: the real search over every configuration of the space, then export from the store."""
    import yaml

    from nas.evaluation.proxy import ProxySpec, proxy_arch
    from nas.study.space import load

    space = Path(args.space).resolve()
    url = f"sqlite:///{Path(args.db).resolve()}"
    study = f"record-{space.stem}"
    base = ["dashboard=false", "adequacy=skip", "pruner=none", "sampler=random", "ray.max_concurrent=1",
            "ray.cpus_per_trial=1", f"store.url={url}", f"study={study}", f"search_space={space.stem}"]
    probe = compose_search(base + args.overrides, spaces=space.parent)
    spec = load(space, proxy_arch({}, ProxySpec.from_dict(dict(probe.proxy))))
    n = len(grid_points(spec))
    cfg = compose_search(base + [f"n_trials={n}"] + args.overrides, spaces=space.parent)
    print(f"recording {n} configurations of {space} into {url} (study {study})", flush=True)
    record(cfg, str(space), out=sys.stdout)
    table = export_table(url, study, yaml.safe_load(space.read_text()))
    table.save(args.table)
    print(f"table: {args.table} ({len(table.entries)} configurations)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    rec = sub.add_parser("record", help="train every configuration of a finite space once and write the table")
    rec.add_argument("--space", default=str(DEFAULT_SPACE))
    rec.add_argument("--db", default=str(REPO / "trials_db" / "replay_record.db"))
    rec.add_argument("--table", default=str(DEFAULT_TABLE))
    rec.add_argument("overrides", nargs="*", help="Hydra overrides of conf/search.yaml (proxy=..., seed=...)")
    parser.add_argument("--table", default=str(DEFAULT_TABLE))
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--trials", type=int, default=16, help="trials of the unpruned study (its budget)")
    parser.add_argument("--sweep", action="store_true", help="also the Pareto pruner's settings")
    parser.add_argument("--out", default="search_efficiency_cpu")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "record":
            if not Path(args.space).is_file():
                raise ValueError(f"--space={args.space!r} is invalid: no such search-space file")
            cmd_record(args)
        else:
            if args.seeds < 1 or args.trials < 1:
                raise ValueError(f"--seeds={args.seeds} --trials={args.trials} are invalid: expected integers >= 1")
            run(args)
    except ValueError as err:  # SearchError, SpaceError, a malformed table: one line, nothing written
        fail(str(err))


if __name__ == "__main__":
    main()
