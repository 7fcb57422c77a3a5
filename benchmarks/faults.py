"""Fault injection: killed drivers, killed trial workers and concurrent drivers on one PostgreSQL study.

    python benchmarks/faults.py [--kills 20] [--worker-kills 3] [--drivers 3] [--n-trials 40]
                                [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

What is exercised is the orchestration (Ray Tune, Optuna, the store, heartbeats, reclaiming, resume), so a
trial is a deterministic synthetic runner (4 rungs of 0.4 s, quality from the knobs) instead of the proxy:
the faults hit the same code paths at 100x the rate a real search would see them.

Phases, all on one study in a fresh PostgreSQL database (dropped at the end):
1. `--kills` times: start one driver, SIGKILL its process group at a random moment 1-12 s later (during Ray
   start-up, sampling, training or a store write). Every ~5th run, one of its trial workers is SIGKILLed first.
2. `--drivers` drivers started together on the same study, one of them killed at a random moment.
3. one clean driver that completes the study.
After every kill the store's COMPLETE rows are snapshotted; at the end Optuna and the store are compared:
lost: a COMPLETE row that later changed or vanished; duplicates: a trial number twice, or a configuration
trained to COMPLETE more than once; stuck: rows still RUNNING; mismatched: trained trials whose Optuna state
differs from the store's or that exist in one only. The last line is the summary.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DRIVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from ray import cloudpickle
    from hydra import compose, initialize_config_dir
    from nas.profiles import conf_dir
    from nas.search import run_search, schema

    class Synthetic:
        '''4 rungs of 0.4 s; quality from the knobs (narrower windows are worse early and better late).'''

        def __call__(self, knobs, *, arch=None, seed, threads):
            local = knobs.get("attention") == "local_global"
            base = 2.0 + knobs.get("window", 0) / 100 + knobs.get("global_tokens", 0) / 50 if local else 3.0
            for step in (1, 2, 4, 8):
                time.sleep(0.4)
                q = base + 1.0 / step
                yield {{"step": step, "tokens": 100 * step, "quality": q, "final": step == 8, "metrics": {{}}}}

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    schema.register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("search", overrides={overrides!r})
    run_search(cfg, trial_runner=Synthetic(), out=sys.stdout)
""")


def worker_pids(driver_pid: int) -> list[int]:
    """Ray trial workers (processes titled ray::ImplicitFunc...) in the driver's session."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            if "ImplicitFunc" in cmd and os.getsid(int(proc.name)) == os.getsid(driver_pid):
                pids.append(int(proc.name))
        except (OSError, ProcessLookupError):
            continue
    return pids


def complete_rows(url: str, study: str) -> dict[int, tuple]:
    from nas.study.store import Store

    store = Store(url)
    try:
        if store.study(study) is None:  # killed before it created the study
            return {}
        return {t.number: (t.params, t.objectives) for t in store.trials(study, states=("COMPLETE",))}
    finally:
        store.close()


def start(script: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script)], cwd=REPO, start_new_session=True,
                            stdout=log.open("a"), stderr=subprocess.STDOUT)


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--worker-kills", type=int, default=3)
    ap.add_argument("--drivers", type=int, default=3)
    ap.add_argument("--n-trials", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    import optuna
    from sqlalchemy import create_engine, text

    from nas.search.bridge import DUPLICATE_ATTR, WITHDRAWN_ATTR, never_trained
    from nas.study.store import Store

    rng = random.Random(args.seed)
    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    db = f"nas_faults_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {db}"))
    url = admin.url.set(database=db).render_as_string(hide_password=False)
    study = "faults"
    overrides = [f"study={study}", f"store.url={url}", f"n_trials={args.n_trials}", "sampler=random",
                 "pruner=median", "adequacy=skip", "dashboard=false", "ray.num_cpus=2", "ray.max_concurrent=2",
                 "store.heartbeat_interval=1", "store.grace_period=4", f"seed={args.seed}"]
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"nas-faults-{uuid.uuid4().hex[:6]}"
    tmp.mkdir(parents=True)
    script, log = tmp / "driver.py", tmp / "drivers.log"
    script.write_text(DRIVER.format(repo=str(REPO), overrides=overrides))
    t0 = time.perf_counter()
    seen: dict[int, tuple] = {}
    lost = set()
    kills = worker_kills = 0

    def snapshot() -> None:
        now = complete_rows(url, study)
        lost.update(n for n, row in seen.items() if now.get(n) != row)
        seen.update(now)

    try:
        for i in range(args.kills):  # 1. one driver at a time, killed at a random moment
            proc = start(script, log)
            if worker_kills < args.worker_kills and i % 3 == 2:
                deadline = time.time() + 60
                while time.time() < deadline and not worker_pids(proc.pid) and proc.poll() is None:
                    time.sleep(0.2)
                time.sleep(rng.uniform(0.2, 1.2))  # mid-trial
                victims = worker_pids(proc.pid)
                if victims:
                    os.kill(rng.choice(victims), signal.SIGKILL)
                    worker_kills += 1
            time.sleep(rng.uniform(1.0, 12.0))
            finished = proc.poll() is not None
            kill(proc)
            kills += not finished
            snapshot()
            print(f"[{time.perf_counter() - t0:6.0f}s] run {i + 1}/{args.kills}: "
                  f"{'killed' if not finished else 'ended before the kill'}; complete rows {len(seen)}",
                  flush=True)
        procs = [start(script, log) for _ in range(args.drivers)]  # 2. concurrent drivers, one killed
        time.sleep(rng.uniform(8.0, 20.0))
        victim = rng.choice(procs)
        kills += victim.poll() is None
        kill(victim)
        for p in procs:
            if p is not victim:
                p.wait(timeout=1800)
        snapshot()
        print(f"[{time.perf_counter() - t0:6.0f}s] {args.drivers} concurrent drivers done (one killed); "
              f"complete rows {len(seen)}", flush=True)
        final = start(script, log)  # 3. a clean run completes the study
        final.wait(timeout=1800)
        snapshot()

        store = Store(url)
        rows = store.trials(study)
        store.close()
        trials = optuna.load_study(study_name=study, storage=url).trials
        trained = {t.number: t for t in trials if not never_trained(t)}
        numbers = Counter(r.number for r in rows)
        configs = Counter(str(sorted(r.params.items())) for r in rows if r.state == "COMPLETE")
        duplicates = sum(c - 1 for c in numbers.values() if c > 1) + sum(c - 1 for c in configs.values() if c > 1)
        stuck = sum(r.state == "RUNNING" for r in rows) + sum(t.state.name == "RUNNING" for t in trials)
        by_number = {r.number: r for r in rows}
        interrupted = {t.user_attrs["rerun_of"] for t in trials if t.user_attrs.get("rerun_of") is not None}
        # a trial asked by a driver killed before it started training has no row: interrupted, re-run, not a mismatch
        never_started = {n for n, t in trained.items() if n not in by_number and n in interrupted}
        mismatched = sum(1 for n in set(by_number) | (set(trained) - never_started)
                         if n not in by_number or n not in trained or by_number[n].state != trained[n].state.name)
        counted = sum(1 for r in rows if not (r.error or "").startswith("interrupted"))
        states = Counter(r.state for r in rows)
        machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"
        print(f"machine: {machine}; PostgreSQL store; wall {time.perf_counter() - t0:.0f} s")
        print(f"study {study!r}: n_trials={args.n_trials}; store rows {len(rows)} ({dict(states)}), counted "
              f"{counted}, answered as duplicates {sum(DUPLICATE_ATTR in t.user_attrs for t in trials)}, withdrawn "
              f"past the total {sum(WITHDRAWN_ATTR in t.user_attrs for t in trials)}, asked by a "
              f"killed driver before training (no row, re-run) {len(never_started)}")
        print(f"faults kills={kills} worker_kills={worker_kills} drivers={args.drivers} lost={len(lost)} "
              f"duplicates={duplicates} stuck={stuck} mismatched={mismatched} distinct_configs={len(configs)}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        admin.dispose()


if __name__ == "__main__":
    main()
