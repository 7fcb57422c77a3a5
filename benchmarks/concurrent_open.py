"""Many drivers opening one new SQLite store at the same instant: does every one open it, and does it survive?

    python benchmarks/concurrent_open.py [--runs 150] [--openers 8]

Each run makes a fresh folder, starts `--openers` processes that import nas.study.store, wait for a common start
time and open `Store(sqlite:///<folder>/nas.db)` (create, WAL journal, Alembic tables). A run fails when
any opener raises or the file is not a complete store afterwards. The last line is the summary.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _open_at(url: str, start: float, results: mp.Queue) -> None:
    from nas.study.store import Store

    while time.time() < start:
        pass
    try:
        Store(url).close()
        results.put("ok")
    except Exception as err:  # noqa: BLE001 -- every failure is the measurement
        results.put(f"{type(err).__name__}: {err}")


def _run(folder: Path, openers: int) -> list[str]:
    """The failures of one run (empty when every opener opened the store and it is whole)."""
    from nas.study.store import Store

    url = f"sqlite:///{folder / 'nas.db'}"
    results: mp.Queue = mp.Queue()
    start = time.time() + 1.0  # after every process has imported nas.study.store
    procs = [mp.Process(target=_open_at, args=(url, start, results)) for _ in range(openers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failures = [r for r in (results.get() for _ in procs) if r != "ok"]
    if not (folder / "nas.db").is_file():
        return [*failures, "the store file is gone"]
    store = Store(url, migrate=False)
    try:
        if not store.has_column("nas_trial", "number"):
            failures.append("the store has no tables")
    finally:
        store.close()
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=150)
    parser.add_argument("--openers", type=int, default=8)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {mp.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"# {args.runs} runs, {args.openers} openers each")
    failed = 0
    t0 = time.perf_counter()
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            failures = _run(Path(tmp), args.openers)
        if failures:
            failed += 1
            print(f"run {i}: {len(failures)} failed: {failures[0][:200]}", flush=True)
        if (i + 1) % 25 == 0:
            print(f"# {i + 1}/{args.runs} runs, {failed} failed, {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"runs={args.runs} openers={args.openers} failed_runs={failed}")


if __name__ == "__main__":
    main()
