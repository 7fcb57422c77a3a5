"""The Ray side of a search: loopback-only servers, joining a Ray head, a dead worker retried once, early start."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import optuna
import psutil
import pytest
import ray  # noqa: F401  (also puts Ray's bundled psutil on the path)
from ray import cloudpickle
from test_search import STEPS, FakeRunner, compose_cfg

from nas.search import run_search
from nas.search.bridge import RUNG_SUFFIX
from nas.search.ray_start import SINGLE_MACHINE_ENV, RayStart
from nas.study.store import Store

HERE = Path(__file__).resolve().parent
RAY_CLI = str(Path(sys.executable).with_name("ray"))


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv4 loopback on a dual-stack socket
    return (mapped or address).is_loopback


def _listening(root: psutil.Process) -> dict[tuple[str, int], set[str]]:
    """(process name, pid) -> the addresses its TCP sockets listen on, for `root` and all its descendants."""
    found: dict[tuple[str, int], set[str]] = {}
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            name = proc.name()
            ips = {c.laddr.ip for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if ips:
            found.setdefault((name, proc.pid), set()).update(ips)
    return found


def _watch(proc: subprocess.Popen, timeout: float) -> dict[tuple[str, int], set[str]]:
    """Every listening socket `proc`'s process tree opened while it ran (sampled every 0.2 s)."""
    seen: dict[tuple[str, int], set[str]] = {}
    root, deadline = psutil.Process(proc.pid), time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        for key, ips in _listening(root).items():
            seen.setdefault(key, set()).update(ips)
        time.sleep(0.2)
    return seen


def _driver_script(tmp_path: Path, overrides: list[str], runner: str) -> Path:
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from test_search import FakeRunner, compose_cfg
        from nas.search import run_search
        run_search(compose_cfg(*{overrides!r}), trial_runner={runner}, out=None)
    """))
    return script


def _assert_loopback_only(seen: dict[tuple[str, int], set[str]], must_include: tuple[str, ...]) -> None:
    names = {name for name, _ in seen}
    for name in must_include:  # the check looked at Ray's servers, not at nothing
        assert any(n.startswith(name) for n in names), f"no listening {name} seen; saw {sorted(names)}"
    outward = {key: sorted(ip for ip in ips if not _is_loopback(ip)) for key, ips in seen.items()}
    assert not {k: v for k, v in outward.items() if v}, f"sockets listening beyond loopback: {outward}"


def test_a_search_opens_no_listening_socket_beyond_loopback(tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    overrides = ["study=loopback", f"store.url={url}", "n_trials=3", "sampler=random", "pruner=none",
                 "ray.num_cpus=2"]
    script = _driver_script(tmp_path, overrides, "FakeRunner(sleep=0.5)")
    env = {k: v for k, v in os.environ.items() if k != SINGLE_MACHINE_ENV}  # the search itself must ask for it
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = _watch(proc, timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert [t.state for t in Store(url).trials("loopback")] == ["COMPLETE"] * 3
    # the driver (its core worker), Ray's control plane and the trial workers
    _assert_loopback_only(seen, ("python", "gcs_server", "raylet", "ray::"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """A Ray head on loopback (`ray start --head --block`), token auth on; yields (address, env, process)."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="nasray")  # short: Ray's socket paths below it must fit in 107 bytes
    # its own temp dir, so that no other process's plain ray.init() joins this head by finding it in /tmp/ray
    env = {**os.environ, SINGLE_MACHINE_ENV: "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    head = subprocess.Popen([RAY_CLI, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert head.poll() is None, f"ray start failed: {head.stderr.read()[-2000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the Ray head did not open its port in 120 s")
        yield f"127.0.0.1:{port}", env, head
    finally:
        head.terminate()  # `ray start --block` stops the processes it started (never `ray stop`: that is every Ray)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_search_joins_a_ray_head_on_loopback_and_leaves_it_running(tmp_path, ray_head, pg_url):
    """The cluster path as documented: a Ray head, a search joining it, results in PostgreSQL."""
    address, env, head = ray_head
    url = pg_url
    cli = [sys.executable, "-m", "nas.search", "search_space=sparse_attn", "study=cluster", f"store.url={url}",
           f"ray.address={address}", "n_trials=3", "sampler=random", "pruner=none", "adequacy=skip",
           "budget_tokens=2048", "dashboard=false", "progress=false"]
    done = subprocess.run(cli, cwd=tmp_path, env={k: v for k, v in env.items() if k != SINGLE_MACHINE_ENV},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    store = Store(url)
    trials = store.trials("cluster")
    store.close()
    assert [t.state for t in trials] == ["COMPLETE"] * 3 and all(t.reports for t in trials)
    # the trials ran on the head's workers (children of its raylet), and the driver left the head running
    assert head.poll() is None
    tree = _listening(psutil.Process(head.pid))
    _assert_loopback_only(tree, ("gcs_server", "raylet"))


class DyingRunner(FakeRunner):
    """Kills its own worker process (os._exit) at the third rung: in the first attempt of each configuration, and in
    every attempt of the dense baseline. Logs each attempt: one line (the knobs) per attempt, a file per config."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(sleep=0.1)
        self.log_dir = log_dir

    def __call__(self, knobs, *, arch=None, seed, threads):
        key = json.dumps(knobs, sort_keys=True)
        log = Path(self.log_dir) / (hashlib.sha1(key.encode()).hexdigest() + ".attempts")
        attempts = len(log.read_text().splitlines()) if log.exists() else 0
        with log.open("a") as f:
            f.write(key + "\n")
        for i, report in enumerate(super().__call__(knobs, seed=seed, threads=threads)):
            if i == 2 and (attempts == 0 or knobs.get("attention") == "dense"):
                time.sleep(1.0)  # the reports already sent reach the driver
                os._exit(3)
            yield report


cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_a_dead_worker_is_retried_once_then_failed_with_one_trial_and_one_row(tmp_path):
    assert not ray.is_initialized()  # run_search starts (and stops) its own Ray
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    logs = tmp_path / "attempts"
    logs.mkdir()
    result = run_search(compose_cfg("study=dying", f"store.url={url}", "n_trials=3", "sampler=random", "pruner=none",
                                    "ray.num_cpus=2", "seed=1"), trial_runner=DyingRunner(str(logs)), out=None)
    trials = Store(url).trials("dying")
    study = optuna.load_study(study_name="dying", storage=url)
    rungs = optuna.load_study(study_name="dying" + RUNG_SUFFIX, storage=url)
    # one Optuna trial (and one rung twin) and one store row per trial, retried or not
    assert [t.number for t in trials] == [0, 1, 2] and len(study.trials) == 3 and len(rungs.trials) == 3
    dense = [t for t in trials if t.params["attention"] == "dense"]
    local = [t for t in trials if t.params["attention"] != "dense"]
    assert dense and dense[0].number == 0 and local  # the baseline first
    for t in dense:  # died in its first attempt and in its one retry
        assert t.state == "FAIL" and "died" in t.error.lower(), t.error
    for t in local:  # died once, then completed: its curve has every rung once, the same in Optuna's twin
        assert t.state == "COMPLETE" and [r.step for r in t.reports] == list(STEPS)
        twin = next(r for r in rungs.trials if r.user_attrs["number"] == t.number)
        *rungs_before, final = t.reports  # the final rung is the trial's value, not an intermediate report
        assert twin.intermediate_values == {r.step: r.metrics["quality"] for r in rungs_before}
        assert twin.value == final.metrics["quality"] == t.objectives["quality"]
    for t in trials:
        assert study.trials[t.number].state.name == t.state
    attempts = {}  # configuration -> attempts, from the runner's own log
    for log in logs.iterdir():
        lines = log.read_text().splitlines()
        attempts[lines[0]] = len(lines)
    dense_tries = [n for key, n in attempts.items() if json.loads(key)["attention"] == "dense"]
    assert dense_tries == [2 * len(dense)]  # 1 + WORKER_RETRIES each
    configs = {json.dumps(t.params, sort_keys=True) for t in local}
    assert sum(attempts.values()) - dense_tries[0] == len(local) + len(configs)  # one death per configuration
    assert result.counts["FAIL"] == len(dense) and result.counts["COMPLETE"] == len(local)
    assert not ray.is_initialized()


def test_ray_start_returns_at_once_and_reraises_a_failed_start():
    t0 = time.perf_counter()
    start = RayStart(address="no-port-here").start()
    assert time.perf_counter() - t0 < 0.5
    with pytest.raises(ValueError, match="no-port-here"):
        start.wait()
    start.shutdown()
    assert not ray.is_initialized()
