"""Search efficiency of samplers x pruners, replayed on a recorded table (nas/replay.py).

    python benchmarks/search_efficiency.py record [--space FILE] [--db FILE] [--table FILE] [hydra overrides...]
    python benchmarks/search_efficiency.py [--table FILE] [--seeds 20] [--trials 16]

record: trains every configuration of a finite space once to the full budget with the real search
(pruner=none, one trial at a time unless overridden) and writes the table JSON. The default space is
benchmarks/spaces/sparse_attn_grid.yaml (31 configurations, ~40 s each on one core with the tiny proxy).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nas.replay import Table, compose_search, export_table, grid_points, record  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DEFAULT_SPACE = REPO / "benchmarks" / "spaces" / "sparse_attn_grid.yaml"
DEFAULT_TABLE = RESULTS / "replay_sparse_attn_tiny.json"


def cmd_record(args: argparse.Namespace) -> None:
    """Record the table: the real search over every configuration of the space, then export from the store."""
    import yaml

    from nas.proxy import ProxySpec, proxy_arch
    from nas.space import load

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
    args = parser.parse_args(argv)
    if args.cmd == "record":
        cmd_record(args)


if __name__ == "__main__":
    main()
