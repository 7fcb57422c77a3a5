"""The search driver end to end (local Ray, SQLite in tmp): baseline first, pruning, FAIL, resume, bad input."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import hydra.errors
import optuna
import pytest
import ray
import yaml
from hydra import compose, initialize_config_dir
from ray import cloudpickle

from nas.evaluation.proxy import proxy_arch
from nas.model.config import ArchConfig
from nas.profiles import conf_dir
from nas.search import SearchError, run_search, validate
from nas.search import schema as search_config
from nas.search.bridge import (
    DUPLICATE_ATTR,
    INTERRUPTED,
    RUNG_SUFFIX,
    OptunaBridge,
    make_pruner,
    make_sampler,
    make_storage,
    never_trained,
)
from nas.search.schema import PrunerConf, SamplerConf
from nas.study.pruner import COMPUTE_ATTR, ParetoPruner
from nas.study.space import SpaceError, load, path_of
from nas.study.store import Store
from nas.study.view import config_key

REPO = Path(__file__).resolve().parents[1]
STEPS = (1, 2, 4, 8)


class FakeRunner:
    """A deterministic stand-in for the proxy: quality grows with the window (dense is worst); can raise."""

    def __init__(self, sleep: float = 0.0, fail_attention: str | None = None) -> None:
        self.sleep, self.fail_attention = sleep, fail_attention

    def __call__(self, knobs, *, arch=None, seed, threads):
        import torch

        assert torch.get_num_threads() == threads  # the trainable set torch threads to the trial's CPUs
        local = knobs.get("attention") == "local_global"
        base = 2.0 + knobs["window"] / 100 if local else 3.5
        for i, step in enumerate(STEPS):
            time.sleep(self.sleep)
            if i == 1 and self.fail_attention is not None and knobs.get("attention") == self.fail_attention:
                raise FloatingPointError("injected failure: loss is nan")
            q = base + 1.0 / step
            yield {"step": step, "tokens": 100 * step, "quality": q, "final": step == STEPS[-1],
                   "metrics": {"val_bpb": q, "clock": time.time()}}


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test module


def compose_cfg(*overrides: str, adequacy: str = "skip"):
    """conf/search.yaml with the overrides; the adequacy check is skipped unless asked (FakeRunner searches)."""
    search_config.register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("search", overrides=["dashboard=false", f"adequacy={adequacy}", *overrides])


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _states_if_any(url: str, study: str) -> list[str]:
    """The study's trial states, [] while the database or the study does not exist yet (read without migrating)."""
    from sqlalchemy.exc import DBAPIError

    try:
        store = Store(url, migrate=False)
    except (DBAPIError, ValueError):  # StoreError: no database yet
        return []
    try:
        return _states(store, study)
    except (DBAPIError, ValueError):
        return []
    finally:
        store.close()


def _states(store: Store, study: str) -> list[str]:
    return [t.state for t in store.trials(study)]


def test_search_end_to_end_baseline_first_pruning_and_front(local_ray, tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    cfg = compose_cfg("study=e2e", f"store.url={url}", "n_trials=8", "sampler=random", "ray.max_concurrent=1",
                      "pruner=pareto", "pruner.n_startup_trials=1", "pruner.min_dominators=1", "seed=3")
    out = io.StringIO()
    result = run_search(cfg, trial_runner=FakeRunner(), out=out)
    store = Store(url)
    trials = store.trials("e2e")
    assert len(trials) == 8 and trials[0].params == {"attention": "dense"}  # the dense baseline runs first
    assert trials[0].state == "COMPLETE" and trials[0].objectives["flops_ratio"] == pytest.approx(1.0)
    assert {t.state for t in trials} <= {"COMPLETE", "PRUNED"} and "PRUNED" in {t.state for t in trials}
    spans = sorted((t.reports[0].metrics["clock"], t.reports[-1].metrics["clock"]) for t in trials)
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))  # ray.max_concurrent=1 honoured
    for t in trials:
        assert t.arch["d_model"] == 64 and t.target_arch["d_model"] == 2048 and t.cost["flops_ratio"] > 0
        steps = [r.step for r in t.reports]
        if t.state == "COMPLETE":
            assert steps == list(STEPS) and t.objectives["quality"] == pytest.approx(t.reports[-1].metrics["quality"])
        else:  # pruned: stopped at a rung, its partial curve kept
            assert 1 <= len(steps) < len(STEPS) and steps == list(STEPS[:len(steps)])
            quality = t.reports[-1].metrics["quality"]
            dominators = [o for o in trials if o.number < t.number and o.cost["flops_ratio"] <= t.cost["flops_ratio"]
                          and any(r.step == steps[-1] and r.metrics["quality"] < quality * 0.99 for r in o.reports)]
            assert dominators  # the Pareto pruner's rule, checked from the store
    # the Optuna study lives in the same database and agrees with the store
    study = optuna.load_study(study_name="e2e", storage=url)
    trained = [t for t in study.trials if not never_trained(t)]  # repeats are answered, not trained
    assert [t.state.name for t in trained] == [t.state for t in trials]
    first_of = {}  # a configuration sampled again is one point: its first trial
    for t in sorted(study.best_trials, key=lambda t: t.number):
        first_of.setdefault(json.dumps(t.params, sort_keys=True), t.number)
    front = set(first_of.values())
    assert front == {row["number"] for row in result.front}
    complete = [t for t in trials if t.state == "COMPLETE"]
    for t in complete:  # front membership matches a direct non-domination check
        dominated = any(o.objectives["quality"] <= t.objectives["quality"] and
                        o.objectives["flops_ratio"] <= t.objectives["flops_ratio"] and o.objectives != t.objectives
                        for o in complete)
        repeat = any(o.params == t.params and o.number < t.number for o in complete)
        assert (t.number in front) == (not dominated and not repeat)
    assert optuna.load_study(study_name="e2e" + RUNG_SUFFIX, storage=url).trials[0].intermediate_values
    text = out.getvalue()
    assert "Pareto front" in text and "python -m nas.export study=e2e policy=knee" in text
    assert ("(dense baseline)" in text) == (0 in front)  # the tag marks the baseline's row, and only that
    # a different search space under the same name is refused, and nothing is written
    before = _states(store, "e2e")
    with pytest.raises(SearchError, match="already exists .* different search space"):
        run_search(compose_cfg("study=e2e", f"store.url={url}", "search_space=head_grouping"), out=None,
                   trial_runner=FakeRunner())
    with pytest.raises(SearchError, match="already exists .* different proxy"):
        run_search(compose_cfg("study=e2e", f"store.url={url}", "proxy.lr=0.01"), out=None, trial_runner=FakeRunner())
    assert _states(store, "e2e") == before
    # running again with the same name and n_trials reached does nothing more
    again = run_search(cfg, trial_runner=FakeRunner(), out=None)
    assert again.counts["COMPLETE"] == 0 and len(store.trials("e2e")) == 8


def test_failing_trial_is_recorded_and_the_search_continues(local_ray, tmp_path):
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    cfg = compose_cfg("study=fails", f"store.url={url}", "n_trials=4", "sampler=random", "pruner=none")
    result = run_search(cfg, trial_runner=FakeRunner(fail_attention="dense"), out=None)
    trials = Store(url).trials("fails")
    baseline = trials[0]
    assert baseline.params == {"attention": "dense"} and baseline.state == "FAIL"
    assert "FloatingPointError: injected failure: loss is nan" in baseline.error
    assert [r.step for r in baseline.reports] == [1]  # the partial curve is kept
    others = [t.state for t in trials[1:] if t.params["attention"] == "local_global"]
    assert others and set(others) == {"COMPLETE"}
    assert result.counts["FAIL"] == 1 + sum(t.params["attention"] == "dense" for t in trials[1:])


def test_a_grid_search_trains_every_point_once_and_ends(local_ray, tmp_path):
    """Optuna's grid sampler stopped the study (Study.stop, outside optimize) on the last point's tell, which
    raised in the driver and lost that trial; past the grid it proposed repeats 1000 times before giving up."""
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    cfg = compose_cfg("study=grid", f"store.url={url}", "search_space=head_grouping", "sampler=grid", "pruner=none",
                      "n_trials=20", "ray.max_concurrent=2")
    out = io.StringIO()
    result = run_search(cfg, trial_runner=FakeRunner(), out=out)
    trials = Store(url).trials("grid")
    assert sorted(json.dumps(t.params, sort_keys=True) for t in trials) == \
        sorted(json.dumps(dict(zip(("kv_heads", "group_share"), point)), sort_keys=True)
               for point in itertools.product([None, 2, 1], ["kv", "qkv"]))  # search_spaces/head_grouping.yaml
    assert {t.state for t in trials} == {"COMPLETE"} and result.counts["COMPLETE"] == 6
    assert "search ends: every one of the grid's 6 points has been trained" in out.getvalue()


def test_kill_the_driver_and_resume_with_nothing_lost(local_ray, tmp_path, store_url):
    url = store_url
    overrides = ["study=resume", f"store.url={url}", "n_trials=6", "sampler=random", "pruner=none",
                 "ray.num_cpus=2", "store.heartbeat_interval=1", "store.grace_period=3"]
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_search import FakeRunner, compose_cfg
        from nas.search import run_search
        run_search(compose_cfg(*{overrides!r}), trial_runner=FakeRunner(sleep=0.4), out=None)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            states = _states_if_any(url, "resume")
            if states.count("COMPLETE") >= 2 and "RUNNING" in states:
                break
            assert proc.poll() is None, "the driver ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("no trial completed in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    store = Store(url)
    before = {t.number: t for t in store.trials("resume")}
    done_before = {n: t for n, t in before.items() if t.state == "COMPLETE"}
    running = sorted(n for n, t in before.items() if t.state == "RUNNING")
    assert len(done_before) >= 2 and running

    out = io.StringIO()
    run_search(compose_cfg(*overrides), trial_runner=FakeRunner(), out=out)
    after = {t.number: t for t in store.trials("resume")}
    for n, t in done_before.items():  # completed trials kept as they were
        assert (after[n].state, after[n].objectives, after[n].reports) == ("COMPLETE", t.objectives, t.reports)
    for n in running:  # interrupted ones marked and re-run with the same configuration
        assert after[n].state == "FAIL" and after[n].error == INTERRUPTED
        rerun = [t for t in after.values() if t.rerun_of == n]
        assert len(rerun) == 1 and rerun[0].params == after[n].params and rerun[0].state == "COMPLETE"
    counted = [t for t in after.values() if t.error != INTERRUPTED]
    assert len(counted) == 6 and all(t.state == "COMPLETE" for t in counted)
    reported = out.getvalue().split("re-running interrupted trials ")[1].split("]")[0] + "]"
    assert set(running) <= set(yaml.safe_load(reported))  # also trials asked but not yet started


def _cli(tmp_path: Path, *args: str, spaces: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"NAS_SEARCH_SPACES": str(spaces)} if spaces else {})}
    return subprocess.run([sys.executable, "-m", "nas.search", f"store.url=sqlite:///{tmp_path / 'db' / 'nas.db'}",
                           *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_cli_bad_space_file_and_bad_override_exit_2_and_write_nothing(tmp_path):
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    data = yaml.safe_load(path_of("sparse_attn").read_text())
    data["params"]["window"]["high"] = 512
    (spaces / "broken.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    bad = _cli(tmp_path, "search_space=broken", spaces=spaces)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (f"error: {spaces / 'broken.yaml'}: params.window=512 is invalid: must be <= "
                                  "seq_len=64 at the proxy's sizes")
    (spaces / "broken.yaml").write_text("name: broken\nparams: {window: {type: int, low: 4\n")  # unclosed
    (spaces / "sparse_attn.yaml").write_text(path_of("sparse_attn").read_text())
    beside = _cli(tmp_path, "search_space=sparse_attn", "n_trials=0", spaces=spaces)  # one bad file stops no other
    assert (beside.returncode, beside.stderr.strip()) == (2, "error: n_trials=0 is invalid: expected an integer >= 1")
    syntax = _cli(tmp_path, "search_space=broken", spaces=spaces)
    assert syntax.returncode == 2
    assert syntax.stderr.strip() == (f"error: {spaces / 'broken.yaml'}: not valid YAML at line 3, column 1: "
                                     "expected ',' or '}', but got '<stream end>' (while parsing a flow mapping at "
                                     "line 2, column 18)")
    for override, says in (("proxy=nosuch", "proxy"), ("hardware=tpu9", "hardware"), ("search_space=nosuch", "nosuch")):
        unknown = _cli(tmp_path, override)  # Hydra's own error, as one line
        assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
        assert unknown.stderr.startswith("error: ") and says in unknown.stderr
    override = _cli(tmp_path, "sampler.name=annealing", "pruner=median")
    assert override.returncode == 2
    assert override.stderr.strip() == ("error: sampler.name='annealing' is invalid: expected one of nsga2, tpe, "
                                       "random, grid")
    assert not (tmp_path / "db").exists()


def test_cli_space_files_that_are_not_yaml_mappings_are_one_line_exit_2(tmp_path):
    texts = {"unclosed": "name: unclosed\nparams:\n  window: {type: int, low: 4\n  global_tokens: 2\n",
             "listed": "- window\n- global_tokens\n"}
    for name, says in (("unclosed", "not valid YAML at line 4, column 16: expected ',' or '}', but got ':' (while "
                                    "parsing a flow mapping at line 3, column 11)"),
                       ("listed", "expected a mapping with keys name, params, baseline, not a list")):
        spaces = tmp_path / name
        spaces.mkdir()
        (spaces / f"{name}.yaml").write_text(texts[name])
        run = _cli(tmp_path, f"search_space={name}", spaces=spaces)
        assert run.returncode == 2
        assert run.stderr.splitlines() == [f"error: {spaces / (name + '.yaml')}: {says}"]
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize("kind, says", [("missing", "does not exist"), ("empty", "holds no text"),
                                         ("binary", "is a binary file"), ("short", "its val split has 30 bytes")])
def test_a_bad_corpus_stops_the_search_before_anything_is_written(tmp_path, monkeypatch, kind, says):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    corpus = tmp_path / f"{kind}.txt"
    if kind != "missing":
        corpus.write_bytes({"empty": b"", "binary": bytes(range(256)) * 4, "short": b"x = 1\n" * 50}[kind])
    url = f"sqlite:///{tmp_path / 'db' / 'nas.db'}"
    with pytest.raises(SearchError) as err:
        run_search(compose_cfg("study=corpus", f"store.url={url}", f"task.corpus={corpus}"), out=None,
                   trial_runner=FakeRunner())
    assert str(err.value).startswith(f"task.corpus={str(corpus)!r}") and says in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "db").exists()  # the study name is not used up


def test_a_bad_store_ends_the_cli_with_one_line_and_leaves_the_file_alone(tmp_path, monkeypatch, capsys):
    from nas.search import main

    path = tmp_path / "random.db"
    path.write_bytes(bytes(range(256)) * 32)
    monkeypatch.chdir(tmp_path)
    for url, says in ((f"sqlite:///{path}", f"{path} is not a usable SQLite database"),
                      ("postgresql+psycopg://nas:hunter2@127.0.0.1:9/nas", "nas:***@127.0.0.1:9/nas")):
        monkeypatch.setattr(sys, "argv", ["nas.search", f"store.url={url}", "study=s", "adequacy=skip"])
        with pytest.raises(SystemExit) as done:
            main()
        assert done.value.code == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: store.url=") and says in err[0] and "hunter2" not in err[0]
    assert path.read_bytes() == bytes(range(256)) * 32 and [p.name for p in tmp_path.iterdir()] == ["random.db"]


def test_a_relative_corpus_reaches_the_trials_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_bytes((REPO / "nas" / "evaluation" / "data.py").read_bytes())
    setup = validate(compose_cfg("task.corpus=text.txt"))
    assert setup.task.corpus == setup.plain["task"]["corpus"] == str(tmp_path / "text.txt")


def test_a_store_password_is_never_printed_nor_stored_and_commands_paste_back(local_ray, pg_url):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from sqlalchemy import create_engine, inspect, make_url, text

    password = "hunter2-pw"
    url = make_url(pg_url).set(password=password).render_as_string(hide_password=False)  # trust auth ignores it
    name = "it's a&b"
    out = io.StringIO()
    run_search(compose_cfg(f"study=\"{name}\"", f"store.url={url}", "n_trials=2", "sampler=random", "pruner=none",
                           "ray.max_concurrent=1"), trial_runner=FakeRunner(), out=out)
    with pytest.raises(SearchError) as err:  # an error that names the store
        run_search(compose_cfg(f"study=\"{name}\"", f"store.url={url}", "proxy.lr=0.01"), out=out,
                   trial_runner=FakeRunner())
    printed = out.getvalue() + str(err.value)
    assert password not in printed and "store postgresql+psycopg://postgres:***@127.0.0.1" in printed
    engine = create_engine(url)  # every row of every table, read without the code under test
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                assert password not in str(row), table
        config = conn.execute(text("SELECT config FROM nas_study")).scalar_one()
    engine.dispose()
    assert config["store"]["url"] == make_url(url).render_as_string(hide_password=True)
    for key, command in (("dashboard", "nas.dashboard"), ("export", "nas.export")):
        line = next(line for line in printed.splitlines() if line.startswith(f"{key}: "))
        words = shlex.split(line.removeprefix(f"{key}: "))
        assert words[:3] == ["python", "-m", command]
        values = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(words[3:])}
        assert values["study"] == name and values["store.url"] == config["store"]["url"]
    optuna_line = next(line for line in printed.splitlines() if line.startswith("optuna-dashboard: "))
    assert shlex.split(optuna_line.removeprefix("optuna-dashboard: ")) == ["optuna-dashboard", config["store"]["url"]]


def test_structured_config_rejects_wrong_types_and_bad_values():
    with pytest.raises(hydra.errors.ConfigCompositionException, match="n_trials=many"):
        compose_cfg("n_trials=many")
    with pytest.raises(SearchError, match=r"ray.max_concurrent=0 is invalid"):
        validate(compose_cfg("ray.max_concurrent=0"))
    with pytest.raises(SearchError, match=r"objectives.compute='speed' is invalid"):
        validate(compose_cfg("objectives.compute=speed"))
    with pytest.raises(SpaceError, match=r"params.window=160 is invalid: must be <= seq_len=64 at the proxy's sizes"):
        validate(compose_cfg("search_space.params.window.high=160"), "sparse_attn.yaml")
    setup = validate(compose_cfg("search_space=full", "proxy.seq_len=256", "sampler=tpe", "pruner=hyperband"))
    assert setup.spec.name == "full" and setup.proxy.seq_len == 256


def test_a_ray_address_where_nothing_listens_is_refused_in_seconds(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(SearchError, match=rf"ray.address='127.0.0.1:{port}': nothing accepts connections at "
                                          rf"127.0.0.1:{port} \(Connection refused\)"):
        validate(compose_cfg(f"ray.address=127.0.0.1:{port}"))
    assert time.perf_counter() - t0 < 10  # Ray itself retried for over 5 minutes
    for bad in ("127.0.0.1", "head:port", "ray://:6379", "127.0.0.1:70000"):
        with pytest.raises(SearchError, match=rf"ray.address='{re.escape(bad)}' is invalid: expected host:port"):
            validate(compose_cfg(f"ray.address='{bad}'"))
    # no Ray on this machine, as Ray looks: RAY_ADDRESS, the cluster `ray start` registered, any gcs_server process
    # (another test's Ray may be running)
    from ray._private import services

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    with pytest.raises(SearchError, match=r"ray.address='auto': Could not find any running Ray instance"):
        validate(compose_cfg("ray.address=auto"))


# ---- the Optuna bridge without Ray: seeding, pruners on the rung study -----------------------------------------


def test_the_default_pruner_is_none():
    """No pruning unless asked: on the recorded replay the Pareto pruner reaches the target in fewer seeds."""
    cfg = compose_cfg()
    assert cfg.pruner.name == PrunerConf().name == "none"
    assert isinstance(make_pruner(PrunerConf(**cfg.pruner)), optuna.pruners.NopPruner)
    assert isinstance(make_pruner(PrunerConf(**compose_cfg("pruner=pareto").pruner)), ParetoPruner)


NO_PRUNER = PrunerConf(name="none")  # the bridges' default pruner


def _bridge(tmp_path, name, sampler="random", pruner=NO_PRUNER, seed=0, check=lambda cost: None):
    spec = load(path_of("sparse_attn"), ArchConfig(seq_len=128, n_layers=2, d_model=64, n_heads=4))
    evaluate = lambda knobs: ({}, {}, {"flops_ratio": knobs.get("window", 32) / 32})  # noqa: E731
    return OptunaBridge(make_storage(f"sqlite:///{tmp_path / 'b.db'}"), name, spec,
                        make_sampler(SamplerConf(name=sampler), seed, spec), make_pruner(pruner), ("flops_ratio",),
                        evaluate, check)


@pytest.mark.parametrize("sampler", ["random", "nsga2", "tpe", "grid"])
def test_a_seed_makes_the_sampled_sequence_reproducible(tmp_path, sampler):
    def run(name, seed):
        bridge = _bridge(tmp_path, name, sampler, seed=seed)
        bridge.enqueue_baseline()
        seen = []
        for _ in range(8):
            s = bridge.ask(lambda *a: None)
            seen.append(s.params)
            bridge.finish(s, {"quality": 2.0 + s.compute[0], "final": True}, None)
        return seen

    first, second, other = run("a", 7), run("b", 7), run("c", 8)
    assert first[0] == {"attention": "dense"} and first == second and first != other


def test_median_pruner_acts_on_the_rung_study_of_a_multi_objective_search(tmp_path):
    bridge = _bridge(tmp_path, "med", sampler="tpe", pruner=PrunerConf(name="median", n_startup_trials=2))
    for q in (1.0, 2.0):
        s = bridge.ask(lambda *a: None)
        assert not bridge.report(s, 1, q)
        bridge.finish(s, {"quality": q, "final": True}, None)
    good, bad = bridge.ask(lambda *a: None), bridge.ask(lambda *a: None)
    assert not bridge.report(good, 1, 1.2) and bridge.report(bad, 1, 5.0)  # median of (1, 2) is 1.5
    assert bridge.finish(bad, {"quality": 5.0, "final": False}, None) == "PRUNED"
    assert bridge.rungs.trials[bad.rung_trial.number].intermediate_values == {1: 5.0}
    bridge.finish(good, {"quality": 1.2, "final": True}, None)
    for _ in range(3):  # multi-objective TPE keeps sampling with a pruned trial in the study
        s = bridge.ask(lambda *a: None)
        bridge.finish(s, {"quality": 1.0, "final": True}, None)
    trained = [t for t in bridge.study.trials if not never_trained(t)]
    assert [t.state.name for t in trained].count("COMPLETE") == 6


def _rung_study(points):
    """In-memory study whose trials reached step 1 with (compute, quality)."""
    study = optuna.create_study()
    for compute, quality in points:
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING,
                                                  intermediate_values={1: quality},
                                                  user_attrs={COMPUTE_ATTR: compute}))
    return study


@pytest.mark.parametrize("compute,quality,expected", [
    (0.6, 2.0, True),    # (0.5, 1.0) and (0.6, 1.5) dominate it
    (0.55, 2.0, False),  # only (0.5, 1.0) has compute <= 0.55
    (0.6, 1.51, False),  # (0.6, 1.5) is within the 1% margin: one dominator only
    (0.4, 9.0, False),   # nothing is cheaper
])
def test_pareto_pruner_counts_dominators_by_a_margin(compute, quality, expected):
    study = _rung_study([(0.5, 1.0), (0.6, 1.5), (0.9, 0.5)])
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, intermediate_values={1: quality},
                                      user_attrs={COMPUTE_ATTR: compute})
    pruner = ParetoPruner(margin=0.01, min_dominators=2, n_startup_trials=3)
    assert pruner.prune(study, trial) is expected
    assert ParetoPruner(margin=0.01, min_dominators=2, n_startup_trials=4).prune(study, trial) is False


def test_resume_takes_optunas_outcome_for_rows_the_killed_driver_had_not_closed(tmp_path):
    from nas.search.driver import _reconcile

    bridge = _bridge(tmp_path, "rec")
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.create_study("rec", {}, {}, "h")
    told, running = bridge.ask(lambda *a: None), bridge.ask(lambda *a: None)
    for s in (told, running):
        store.start_trial("rec", s.number, s.params, s.arch)
    bridge.finish(told, {"quality": 2.5, "final": True}, None)  # killed after Optuna's tell, before the store's
    bridge.driver = {"host": bridge.driver["host"], "pid": dead_pid()}  # as if another, now dead, driver asked them
    bridge.study._storage.set_trial_user_attr(running.trial._trial_id, "driver", bridge.driver)
    _reconcile(store, bridge, "rec")
    rerun = bridge.reclaim(lambda n: store.mark_interrupted("rec", INTERRUPTED, [n]))
    rows = {t.number: t for t in store.trials("rec")}
    assert rerun == [running.number]
    assert rows[told.number].state == "COMPLETE"
    assert rows[told.number].objectives == {"quality": 2.5, "flops_ratio": told.compute[0]}
    assert (rows[running.number].state, rows[running.number].error) == ("FAIL", INTERRUPTED)


def test_hard_constraints_reject_configurations_before_training(tmp_path):
    from nas.search.driver import _checker

    setup = validate(compose_cfg("constraints.max_memory_gb=10"))
    assert _checker(setup)({"params_unique": 1e9, "memory_bytes": 20e9}).startswith(
        "memory 20 GB > constraints.max_memory_gb=10")
    assert _checker(setup)({"params_unique": 1e12, "memory_bytes": 5e9}) is None
    rejected = []
    bridge = _bridge(tmp_path, "con", check=lambda cost: "too big" if cost["flops_ratio"] > 0.15 else None)
    s = bridge.ask(lambda sampled, reason: rejected.append((sampled.number, reason)))
    assert s.compute[0] <= 0.15 and rejected and all(reason == "too big" for _, reason in rejected)
    for number, _ in rejected:  # told PRUNED with the reason, and not counted against n_trials
        trial = bridge.study.trials[number]
        assert trial.state.name == "PRUNED" and trial.user_attrs["infeasible"] == "too big"
    bridge.finish(s, {"quality": 1.0, "final": True}, None)
    assert bridge.n_done() == 1


# ---- per-space defaults and k compute objectives --------------------------------------------------------------


def test_a_space_picks_its_task_and_target_unless_the_command_line_names_them():
    sharing = compose_cfg("search_space=sharing")
    assert (sharing.task.name, sharing.target.name, sharing.study) == ("capacity", "llama3.2_1b_32k",
                                                                       "sharing-tiny_deep-capacity")
    mine = compose_cfg("search_space=sharing", "task=lm", "target=gpt_7b", "proxy=tiny")
    assert (mine.task.name, mine.target.name, mine.study) == ("lm", "gpt_7b", "sharing-tiny-lm")
    sparse = compose_cfg()  # the default space
    assert (sparse.task.name, sparse.target.name) == ("long_range", "llama3.2_1b_32k")
    assert compose_cfg("search_space=precision").task.name == "numeric"


def test_the_cli_composes_the_spaces_task(tmp_path):
    shown = _cli(tmp_path, "search_space=sharing", "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    cfg = yaml.safe_load(shown.stdout)
    assert cfg["task"]["name"] == "capacity" and cfg["target"]["name"] == "llama3.2_1b_32k"
    assert cfg["search_space"]["objectives"] == ["unique_params_ratio", "memory_ratio"]


def test_compute_objectives_come_from_the_space_or_an_override():
    assert validate(compose_cfg("search_space=sharing")).compute_keys == ("unique_params_ratio", "memory_ratio")
    assert validate(compose_cfg("search_space=full")).compute_keys == ("flops_ratio", "unique_params_ratio",
                                                                       "time_ratio")
    setup = validate(compose_cfg("search_space=sharing", "objectives.compute=[time_ratio,memory_ratio]"))
    assert setup.compute_keys == ("time_ratio", "memory_ratio")
    assert setup.plain["objectives"]["compute"] == ["time_ratio", "memory_ratio"]  # stored resolved
    assert validate(compose_cfg("objectives.compute=time_ratio")).compute_keys == ("time_ratio",)
    with pytest.raises(SearchError) as err:
        validate(compose_cfg("objectives.compute=[time_ratio,speed]"))
    assert str(err.value) == ("objectives.compute=['time_ratio', 'speed'] is invalid: 'speed' is not a compute "
                              "objective; expected one of flops_ratio, time_ratio, memory_ratio, unique_params_ratio, "
                              "kv_cache_ratio, prefill_time_ratio, decode_time_ratio, or a list of them")
    inference = validate(compose_cfg("search_space=sparse_attn", "objectives.compute=[flops_ratio,kv_cache_ratio,"
                                     "decode_time_ratio,prefill_time_ratio]"))
    assert inference.compute_keys == ("flops_ratio", "kv_cache_ratio", "decode_time_ratio", "prefill_time_ratio")
    with pytest.raises(SearchError, match=r"objectives.compute=7 is invalid"):
        validate(compose_cfg("objectives.compute=7"))
    with pytest.raises(SearchError, match=r"adequacy='maybe' is invalid: expected one of enforce, warn, skip"):
        validate(compose_cfg(adequacy="maybe"))


def _bridge2(tmp_path, name, pruner=NO_PRUNER):
    """A sharing-space bridge with two compute objectives from a closed-form cost."""
    spec = load(path_of("sharing"), ArchConfig(seq_len=128, n_layers=2, d_model=64, n_heads=4))
    unique = {"none": 1.0, "all": 0.1, "sequence": 0.5, "cycle": 0.5, "cycle_rev": 0.5, "adjacent": 0.5,
              "ffn_block_diag": 0.7}
    evaluate = lambda knobs: ({}, {}, {"unique_params_ratio": unique[knobs["sharing"]],  # noqa: E731
                                       "memory_ratio": 1.0 - unique[knobs["sharing"]] / 4})
    return OptunaBridge(make_storage(f"sqlite:///{tmp_path / 'b.db'}"), name, spec,
                        make_sampler(SamplerConf(name="random"), 0, spec), make_pruner(pruner),
                        ("unique_params_ratio", "memory_ratio"), evaluate, lambda cost: None)


def test_a_two_compute_objective_study_tells_three_values_and_its_front_is_optunas(tmp_path):
    from nas.study.dominance import pareto_front

    bridge = _bridge2(tmp_path, "k2")
    bridge.enqueue_baseline()
    for i in range(10):
        s = bridge.ask(lambda *a: None)
        assert s.compute == (s.cost["unique_params_ratio"], s.cost["memory_ratio"])
        assert bridge.rungs.trials[s.rung_trial.number].user_attrs[COMPUTE_ATTR] == list(s.compute)
        bridge.finish(s, {"quality": 2.0 + (i % 3) / 10, "final": True}, None)
    study = optuna.load_study(study_name="k2", storage=f"sqlite:///{tmp_path / 'b.db'}")
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 3
    assert study.metric_names == ["quality", "unique_params_ratio", "memory_ratio"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    ours = {done[i].number for i in pareto_front([t.values for t in done])}
    on_front = [t for t in done if t.number in ours]
    repeats = {t.number for t in on_front if any(o.params == t.params and o.number < t.number for o in on_front)}
    assert ours - repeats == {t.number for t in bridge.front()}  # a configuration sampled again is one point
    assert bridge.objectives((0.5, 0.875), 2.1) == {"quality": 2.1, "unique_params_ratio": 0.5, "memory_ratio": 0.875}


def test_pareto_pruner_with_two_compute_objectives():
    """A peer must be no worse on every compute objective (and better on rung quality by the margin)."""
    study = _rung_study([([0.5, 0.9], 1.0), ([0.6, 0.5], 1.0), ([0.4, 0.4], 3.0)])  # (compute objectives, quality)
    trial = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, intermediate_values={1: 2.0},
                                      user_attrs={COMPUTE_ATTR: [0.6, 0.9]})
    # peer 0 (0.5, 0.9) and peer 1 (0.6, 0.5) are no worse on both and better on quality; peer 2 has worse quality
    assert ParetoPruner(margin=0.01, min_dominators=2, n_startup_trials=3).prune(study, trial)
    cheaper_memory = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, intermediate_values={1: 2.0},
                                               user_attrs={COMPUTE_ATTR: [0.6, 0.6]})
    assert not ParetoPruner(margin=0.01, min_dominators=2, n_startup_trials=3).prune(study, cheaper_memory)
    assert ParetoPruner(margin=0.01, min_dominators=1, n_startup_trials=3).prune(study, cheaper_memory)


# ---- the proxy adequacy check of a new study ------------------------------------------------------------------


def _fake_adequacy(monkeypatch, passed: bool, calls: list, noise: dict | None = None) -> None:
    """nas.evaluation.adequacy replaced by a stand-in with its API (check_adequacy -> Adequacy; `noise`: its seed
    noise)."""
    import types
    from dataclasses import asdict, dataclass

    @dataclass
    class Adequacy:
        passed: bool
        summary: str
        fix: str | None
        checks: list
        noise: dict | None = None

        def to_dict(self) -> dict:
            return asdict(self)

    def check_adequacy(spec, proxy, task, *, budget_tokens=None, seed=0, threads=1, device="auto", cache_dir=None,
                       progress=False):
        calls.append((spec.name, proxy.name, task.name, budget_tokens, seed, threads))
        checks = [{"name": "window_resolution", "measured": 0.012 if passed else 0.001, "threshold": 0.005,
                   "passed": passed, "meaning": "bpb gap between W=8 and dense at the proxy"}]
        if passed:
            return Adequacy(True, f"proxy {proxy.name} resolves {spec.name}: gap 0.012 >= 0.005", None, checks, noise)
        return Adequacy(False, f"proxy {proxy.name} cannot resolve {spec.name}: gap 0.001 < 0.005",
                        "proxy.seq_len=512", checks)

    module = types.ModuleType("nas.evaluation.adequacy")
    module.Adequacy, module.check_adequacy = Adequacy, check_adequacy
    monkeypatch.setitem(sys.modules, "nas.evaluation.adequacy", module)


def test_a_failed_adequacy_check_stops_a_new_study_before_anything_is_written(tmp_path, monkeypatch):
    calls: list = []
    _fake_adequacy(monkeypatch, passed=False, calls=calls)
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    out = io.StringIO()
    with pytest.raises(SearchError) as err:
        run_search(compose_cfg("study=inadequate", f"store.url={url}", "seed=5", adequacy="enforce"),
                   trial_runner=FakeRunner(), out=out)
    message = str(err.value)
    assert "\n" not in message and message == ("proxy adequacy check failed: proxy tiny_2m cannot resolve sparse_attn: "
                                               "gap 0.001 < 0.005; fix: proxy.seq_len=512 (adequacy=warn searches "
                                               "anyway)")
    assert calls == [("sparse_attn", "tiny_2m", "long_range", None, 5, 1)]
    assert "adequacy: proxy tiny_2m cannot resolve sparse_attn" in out.getvalue()
    store = Store(url)
    assert store.studies() == []
    assert optuna.get_all_study_names(url) == []  # nor an Optuna study
    store.close()


def test_the_cli_turns_a_failed_check_into_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from nas.search import main

    _fake_adequacy(monkeypatch, passed=False, calls=[])
    monkeypatch.setattr(sys, "argv", ["nas.search", f"store.url=sqlite:///{tmp_path / 'nas.db'}", "study=cli",
                                      "progress=false"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: proxy adequacy check failed: proxy tiny_2m cannot resolve")


def test_warn_records_a_failed_check_and_a_two_objective_search_runs_to_its_page(local_ray, tmp_path, monkeypatch):
    from nas.dashboard import build

    calls: list = []
    _fake_adequacy(monkeypatch, passed=False, calls=calls)
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    cfg = compose_cfg("study=warned", f"store.url={url}", "n_trials=5", "sampler=random", "pruner=none",
                      "objectives.compute=[flops_ratio,memory_ratio]", adequacy="warn")
    out = io.StringIO()
    result = run_search(cfg, trial_runner=FakeRunner(), out=out)
    store = Store(url)
    study, trials = store.study("warned"), store.trials("warned")
    assert study.adequacy["mode"] == "warn" and study.adequacy["passed"] is False
    assert study.adequacy["fix"] == "proxy.seq_len=512" and study.adequacy["checks"][0]["threshold"] == 0.005
    assert study.config["objectives"] == {"compute": ["flops_ratio", "memory_ratio"]}
    done = [t for t in trials if t.state == "COMPLETE"]
    assert done and all(set(t.objectives) == {"quality", "flops_ratio", "memory_ratio"} for t in done)
    assert all(t.objectives["memory_ratio"] == t.cost["memory_ratio"] for t in done)
    first_of: dict[str, int] = {}  # Optuna's front, one trial per configuration (the earliest), as the summary's
    for t in sorted(optuna.load_study(study_name="warned", storage=url).best_trials, key=lambda t: t.number):
        first_of.setdefault(config_key(t.params), t.number)
    assert {row["number"] for row in result.front} == set(first_of.values())
    assert all({"flops_ratio", "memory_ratio"} <= set(row) for row in result.front)
    header = next(line for line in out.getvalue().splitlines() if line.lstrip().startswith("trial"))
    assert "flops_ratio" in header and "memory_ratio" in header
    # resuming is not checked again, and keeps the stored record
    run_search(cfg, trial_runner=FakeRunner(), out=None)
    assert len(calls) == 1 and store.study("warned").adequacy == study.adequacy
    store.close()
    page = build(url, ["warned"], tmp_path / "pages")
    html = (tmp_path / "pages" / "warned.html").read_text()
    assert [p.name for p in page] == ["index.html", "warned.html"]
    assert 'id="adequacy"' in html and "FAILED" in html and "proxy.seq_len=512" in html
    assert "window_resolution" in html and "0.001" in html and "0.005" in html


def test_skip_records_that_no_check_ran(tmp_path, monkeypatch):
    from nas.evaluation import noise
    from nas.search.driver import check_adequacy

    monkeypatch.setattr(noise, "NOISE_DIR", tmp_path / "noise")
    record = check_adequacy(validate(compose_cfg()), out=None)
    assert record["mode"] == "skip" and record["passed"] is None and "skipped" in record["summary"]
    assert "noise" not in record  # nothing cached, nothing trained


def _noise_record(sd: float, setup) -> dict:
    from nas.evaluation import noise

    seeds = [0, 1, 2]
    qualities = [2.5, 2.5 + sd, 2.5 - sd]  # sample sd: exactly sd
    key = noise.noise_key(setup.proxy, setup.task, setup.proxy.budget_tokens, seeds)
    return noise.from_qualities(setup.proxy, setup.task, setup.proxy.budget_tokens, dict(zip(seeds, qualities)),
                                key).to_dict()


def test_skip_still_reads_a_cached_noise(tmp_path, monkeypatch):
    from nas.evaluation import noise
    from nas.search.driver import check_adequacy

    monkeypatch.setattr(noise, "NOISE_DIR", tmp_path / "noise")
    setup = validate(compose_cfg())
    record = _noise_record(0.02, setup)
    noise.write_cache(noise.SeedNoise(**record))
    out = io.StringIO()
    found = check_adequacy(setup, out=out)["noise"]
    assert found["cached"] and found["qualities"] == record["qualities"]
    assert found["sd"] == pytest.approx(0.02) and found["margin"] == pytest.approx(2 * 2 ** 0.5 * 0.02)
    assert "noise: dense baseline at seeds [0, 1, 2] = 2.5000, 2.5200, 2.4800 (sd 0.0200, cached): quality " \
           "differences within 0.0566 are ties on the front" in out.getvalue()


def test_a_study_stores_its_noise_and_its_front_and_summary_use_it(local_ray, tmp_path, monkeypatch):
    """FakeRunner's qualities span 1.5 (window 4 at 2.04 to dense at 3.5): with a seed sd of 1.0 (margin 2.83)
    every difference is a tie, so every configuration is on the front and the summary says so."""
    from nas.search.driver import SearchResult, _summary

    cfg = compose_cfg("study=noisy", f"store.url=sqlite:///{tmp_path / 'nas.db'}", "n_trials=4", "sampler=random",
                      adequacy="warn")
    record = _noise_record(1.0, validate(cfg))
    _fake_adequacy(monkeypatch, passed=True, calls=[], noise=record)
    out = io.StringIO()
    result = run_search(cfg, trial_runner=FakeRunner(), out=out)
    store = Store(result.url)
    stored, done = store.study("noisy").adequacy, [t for t in store.trials("noisy") if t.state == "COMPLETE"]
    store.close()
    assert stored["noise"] == record and result.adequacy == stored
    assert len(done) == 4 and sorted(r["number"] for r in result.front) == sorted(t.number for t in done)
    text = out.getvalue()
    progress = [line for line in text.splitlines() if "] trial" in line]
    assert progress[-1].endswith("front 4")  # the live count uses the same tie margin
    assert "quality noise: seed sd 1.0000 (3 seeds of the dense baseline; 1 per trial): differences within 2.8284 " \
           "are ties" in text and "indistinguishable at this proxy; decided by compute" in text
    assert "free ranking (more flops_ratio = better quality) over 4 configurations" in text  # beside the proxy's
    assert "separates 0 of 6 pairs beyond its noise (2.8284)" in text and "adds nothing the cost model" in text
    # without the noise the same trials make the plain front (dense, the worst and dearest, is dominated)
    plain = io.StringIO()
    _summary(SearchResult("noisy", result.url, {}, [r for r in result.front if not r["baseline"]], 1.0, None),
             ("flops_ratio",), plain, False)
    assert "quality noise: not measured for this study" in plain.getvalue()


def test_a_configuration_proposed_twice_is_trained_once_and_one_point_of_the_front(tmp_path):
    bridge = _bridge(tmp_path, "dup")
    point = {"attention": "local_global", "window": 8, "global_tokens": 0, "gate": "none", "global_every": None}
    for _ in range(2):
        bridge.study.enqueue_trial(point)
    first, other = bridge.ask(lambda *a: None), bridge.ask(lambda *a: None)
    assert first.params == point and other.params != point  # the repeat, while the first trains, is skipped
    assert bridge.study.trials[first.number + 1].user_attrs[DUPLICATE_ATTR] == first.number
    for s in (first, other):
        bridge.finish(s, {"quality": 2.0, "final": True}, None)
    bridge.study.enqueue_trial(point)
    third = bridge.ask(lambda *a: None)  # a repeat, once the first finished: answered from it
    answered = bridge.study.trials[third.number - 1]
    assert answered.params == point and answered.values == bridge.study.trials[first.number].values
    bridge.finish(third, {"quality": 2.0, "final": True}, None)
    assert point in [t.params for t in bridge.study.best_trials]
    assert [t.params for t in bridge.front()].count(point) == 1 and bridge.n_done() == 3


def test_target_and_hardware_overrides_reach_the_cost():
    base = validate(compose_cfg("search_space=head_grouping"))
    arch = proxy_arch({"kv_heads": 2}, base.proxy)
    cost = lambda *overrides: validate(compose_cfg("search_space=head_grouping", *overrides)).coster.estimate(  # noqa: E731
        arch).to_dict()
    plain, batch, slow = cost(), cost("target.workload.batch=2"), cost("hardware.memory_bandwidth_gbs=100")
    assert batch["memory_bytes"] > plain["memory_bytes"]  # two of llama3.2_1b_32k's one sequence held at once
    assert slow["step_time_s"] > plain["step_time_s"]
    assert plain["flops_ratio"] == batch["flops_ratio"]


@pytest.mark.parametrize("error_hook_first", [True, False])
def test_a_dead_workers_row_is_right_whichever_hook_ray_calls_first(tmp_path, error_hook_first):
    from types import SimpleNamespace

    from nas.search.tune_parts import BridgeSearcher, DriverState, StoreCallback

    bridge = _bridge(tmp_path, "hooks")
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.create_study("hooks", {}, {}, "h")
    state = DriverState(bridge, store, "hooks", seed=0, threads=1, out=None, n_trials=4)
    searcher, callback = BridgeSearcher(state), StoreCallback(state)
    searcher.suggest("t1")
    trial = SimpleNamespace(trial_id="t1", get_error=lambda: "Traceback ...\nRayActorError: the actor died")
    callback.on_trial_start(0, [], trial)
    hooks = [lambda: callback.on_trial_error(0, [], trial), lambda: searcher.on_trial_complete("t1", None, True)]
    for hook in hooks if error_hook_first else hooks[::-1]:
        hook()
    row = store.trials("hooks")[0]
    assert (row.state, row.error) == ("FAIL", "RayActorError: the actor died")
    assert bridge.study.trials[row.number].state.name == "FAIL" and state.counts["FAIL"] == 1
    state.close()
