"""Many drivers, one study: heartbeats, reclaiming a dead driver's trials, no duplicate training, races."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from test_search import dead_pid

from nas.bench.replay import config_key, grid_points
from nas.model.config import ArchConfig
from nas.search.bridge import (
    DRIVER_ATTR,
    DUPLICATE_ATTR,
    INTERRUPTED,
    WITHDRAWN_ATTR,
    OptunaBridge,
    SpaceExhausted,
    make_pruner,
    make_sampler,
    make_storage,
    never_trained,
)
from nas.search.driver import sampler_seed
from nas.search.schema import PrunerConf, SamplerConf
from nas.study.space import load, path_of
from nas.study.store import Store

NONE = lambda *a: None  # noqa: E731


def _bridge(url: str, name: str = "md", seed: int = 0, beat: tuple[int, int] | None = (1, 2),
            space: str = "sparse_attn", sampler: str = "random") -> OptunaBridge:
    spec = load(path_of(space), ArchConfig(seq_len=128, n_layers=2, d_model=64, n_heads=4))
    evaluate = lambda knobs: ({}, {}, {"flops_ratio": knobs.get("window", 32) / 32})  # noqa: E731
    return OptunaBridge(make_storage(url, *(beat or (None, None))), name, spec,
                        make_sampler(SamplerConf(name=sampler), seed, spec), make_pruner(PrunerConf(name="none")),
                        ("flops_ratio",), evaluate, lambda cost: None)


def _as_driver(bridge: OptunaBridge, trial, **driver) -> None:
    """Stamp a trial as asked by another driver."""
    bridge.storage.set_trial_user_attr(trial._trial_id, DRIVER_ATTR, driver)


def test_a_live_drivers_trials_are_kept_and_a_dead_ones_rerun_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    first, second, third = _bridge(url), _bridge(url), _bridge(url)
    a, b = first.ask(NONE), first.ask(NONE)
    assert second.reclaim(NONE) == []  # first's process is alive and beating
    _as_driver(first, a.trial, host=first.driver["host"], pid=dead_pid())  # first "died" while training a
    seen: list[int] = []
    assert second.reclaim(seen.append) == [a.number] == seen
    assert third.reclaim(NONE) == []  # reclaimed once, whoever looks next
    told = second.study.trials[a.number]
    assert told.state.name == "FAIL" and second.interrupted() == {a.number}
    assert [t.state.name for t in second.rungs.trials] == ["FAIL", "RUNNING"]  # a's rung twin too
    rerun = second.ask(NONE)
    assert rerun.params == a.params and rerun.rerun_of == a.number
    # the first driver, if it was only slow, learns its trial was reclaimed and tells nothing
    assert first.report(a, 1, 2.0) is True
    assert first.finish(a, {"quality": 2.0, "final": True}, None) == "RECLAIMED"
    assert first.finish(b, {"quality": 2.0, "final": True}, None) == "COMPLETE"
    assert first.study.trials[a.number].state.name == "FAIL"


def test_a_trial_whose_heartbeat_stops_is_reclaimed_from_any_host(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    remote, local = _bridge(url), _bridge(url)  # heartbeat every 1 s, stale after 2 s
    s = remote.ask(NONE)
    _as_driver(remote, s.trial, host="another-machine", pid=1)  # no pid check possible: only the heartbeat
    for _ in range(6):  # beating: never reclaimed
        remote.beat([s])
        time.sleep(0.5)
        assert local.reclaim(NONE) == []
    killed_while_asking = remote.study.ask()  # neither beaten nor stamped: only its age tells
    assert local.reclaim(NONE) == []
    time.sleep(3.5)  # stopped beating for longer than the grace period
    assert local.reclaim(NONE) == [s.number, killed_while_asking.number]


def test_a_configuration_already_trained_is_answered_not_trained_again(tmp_path):
    bridge = _bridge(f"sqlite:///{tmp_path / 'b.db'}")
    bridge.enqueue_baseline()
    bridge.enqueue_baseline()  # a second creator's call queues nothing
    base = bridge.ask(NONE)
    bridge.finish(base, {"quality": 3.0, "final": True}, None)
    bridge.study.enqueue_trial(dict(base.params))  # the sampler proposes the dense point again
    nxt = bridge.ask(NONE)
    assert nxt.params != base.params and nxt.number == base.number + 2
    dup = bridge.study.trials[base.number + 1]
    assert dup.user_attrs[DUPLICATE_ATTR] == base.number and dup.values == [3.0, base.compute[0]]
    assert [t.user_attrs.get("number") for t in bridge.rungs.trials] == [base.number, nxt.number]  # never trained
    bridge.finish(nxt, {"quality": 2.0, "final": True}, None)
    assert bridge.n_done() == 2  # the duplicate does not count against n_trials
    assert len(bridge.front()) == len({config_key(t.params) for t in bridge.front()})


def test_a_resumed_driver_samples_a_stream_of_its_own(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    first = _bridge(url, seed=sampler_seed(0, True, 0))
    asked = []
    for _ in range(4):
        s = first.ask(NONE)
        asked.append(s.params)
        first.finish(s, {"quality": 2.0, "final": True}, None)
    assert sampler_seed(0, True, 0) == 0 and sampler_seed(0, False, 4) != 0
    again = _bridge(url, seed=sampler_seed(0, False, 4))  # resumed: same seed, 4 trials in the study
    fresh = [again.ask(NONE).params for _ in range(4)]
    replay = _bridge(f"sqlite:///{tmp_path / 'c.db'}", seed=0)
    assert fresh != [replay.ask(NONE).params for _ in range(4)]
    assert not any(p in asked for p in fresh[:1])  # its first fresh sample is not the first driver's first


DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_search import FakeRunner, compose_cfg
    from nas.search import run_search
    run_search(compose_cfg(*{overrides!r}), trial_runner=FakeRunner(sleep=0.3), out=sys.stdout)
""")


def test_concurrent_drivers_share_one_study(store_url, tmp_path):
    """Two drivers start at once on a new study: one creates it, both train, n_trials is the study's total."""
    overrides = ["study=shared", f"store.url={store_url}", "n_trials=7", "sampler=random", "pruner=none",
                 "ray.num_cpus=1", "ray.max_concurrent=1", "store.heartbeat_interval=1", "store.grace_period=3"]
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(Path(__file__).parent), overrides=overrides))
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    store = Store(store_url)
    rows = store.trials("shared")
    study = optuna.load_study(study_name="shared", storage=store_url)
    trained = [t for t in study.trials if not never_trained(t)]
    assert [t.number for t in rows] == [t.number for t in trained]  # one row per trained trial, no number twice
    assert [r.state for r in rows] == [t.state.name for t in trained]  # store and Optuna agree
    assert not [r for r in rows if r.state == "RUNNING"]
    assert sum(r.state == "COMPLETE" for r in rows) == 7 or \
        sum(r.error != INTERRUPTED for r in rows) == 7  # the study's total, not 7 per driver
    configs = [tuple(sorted(r.params.items())) for r in rows if r.state == "COMPLETE"]
    assert len(configs) == len(set(configs))  # nothing trained twice, the baseline included
    assert sum(r.params == {"attention": "dense"} for r in rows) == 1
    assert sum("resuming study" in o for o in outs) <= 1  # the other joined the creator's study
    store.close()


def test_a_driver_waits_for_trials_running_elsewhere_and_stops_at_the_studys_total(tmp_path):
    from nas.search.tune_parts import DriverState

    url = f"sqlite:///{tmp_path / 'b.db'}"
    other, mine = _bridge(url), _bridge(url)
    store = Store(url)
    store.create_study("md", {}, {}, "h")
    state = DriverState(mine, store, "md", seed=0, threads=1, out=None, n_trials=2)
    elsewhere = other.ask(NONE)
    assert state.next_step() == "ask"  # 0 done + 1 running elsewhere < 2
    here = mine.ask(NONE)
    state._waiting_since = None
    assert state.next_step() == "wait"  # the study's total is running
    other.finish(elsewhere, {"quality": 2.0, "final": True}, None)
    mine.finish(here, {"quality": 2.5, "final": True}, None)
    state._waiting_since = None
    assert state.next_step() == "done"
    state.close()
    store.close()


def test_of_two_drivers_asking_the_last_trial_at_once_the_later_yields(tmp_path):
    """Both passed the "fewer than n_trials done or running" check before either asked: the trial with the higher
    number is withdrawn (never run, not counted), so the study ends at its total, not one past it."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    first, second = _bridge(url), _bridge(url, seed=1)  # seeds apart: no configuration proposed twice
    a = first.ask(NONE, n_trials=2)
    b = second.ask(NONE, n_trials=2)
    assert (a.number, b.number) == (0, 1)  # 0 done + 2 running: the total, not past it
    assert first.ask(NONE, n_trials=2) is None  # a third ask at once: trial 2 yields
    withdrawn = first.study.trials[2]
    assert withdrawn.state.name == "FAIL" and withdrawn.user_attrs[WITHDRAWN_ATTR] is True
    first.finish(a, {"quality": 2.0, "final": True}, None)
    assert second.ask(NONE, n_trials=2) is None  # 1 done + 1 running
    second.finish(b, {"quality": 2.5, "final": True}, None)
    assert first.n_done() == 2 and second.n_done() == 2  # the withdrawn trials do not count


def test_a_withdrawn_trial_gives_its_queued_configuration_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    first, second = _bridge(url), _bridge(url, seed=1)  # seeds apart: no configuration proposed twice
    elsewhere = second.ask(NONE, n_trials=1)  # a sampled trial, asked first
    first.enqueue_baseline()
    assert first.ask(NONE, n_trials=1) is None  # it popped the baseline from the queue, past the total
    waiting = first.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [(t.user_attrs, first.storage.get_trial_system_attrs(t._trial_id)["fixed_params"]) for t in waiting] == \
        [({"baseline": True}, {"attention": "dense"})]
    second.finish(elsewhere, {"quality": 2.0, "final": True}, None)
    base = first.ask(NONE, n_trials=2)  # the next trial asked runs it
    assert base.params == {"attention": "dense"} and first.study.trials[base.number].user_attrs["baseline"] is True


def test_a_withdrawn_grid_point_is_queued_again_not_lost(tmp_path):
    """Optuna's grid sampler counts a finished trial's point as visited: withdrawn unqueued, it came back only
    once the grid was spent, by chance, after duplicate proposals. Queued again, the grid is covered in order."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    first, second = (_bridge(url, space="head_grouping", sampler="grid") for _ in range(2))
    grid = {config_key(point) for point in grid_points(first.spec)}
    elsewhere = second.ask(NONE, n_trials=1)
    assert first.ask(NONE, n_trials=1) is None  # it drew another grid point, past the total
    second.finish(elsewhere, {"quality": 2.0, "final": True}, None)
    trained = [elsewhere.params]
    with pytest.raises(SpaceExhausted, match=f"every one of the grid's {len(grid)} points has been trained"):
        while (s := first.ask(NONE, n_trials=len(grid) + 1)) is not None:
            first.finish(s, {"quality": 2.0, "final": True}, None)  # the last point's tell used to raise
            trained.append(s.params)
    assert sorted(config_key(p) for p in trained) == sorted(grid)  # every point once
    assert not [t.number for t in first.study.trials if DUPLICATE_ATTR in t.user_attrs]  # none proposed twice


def test_a_row_started_after_its_trial_was_reclaimed_ends_interrupted(tmp_path):
    """A slow driver's trial is reclaimed (heartbeat late) before Ray starts it; the row it then writes is not
    left RUNNING: once the driver learns of the reclaim, the row ends FAIL, interrupted."""
    from nas.search.tune_parts import DriverState, start_row, write_outcome

    url = f"sqlite:///{tmp_path / 'b.db'}"
    slow, other = _bridge(url), _bridge(url, seed=1)
    store = Store(url)
    store.create_study("md", {}, {}, "h")
    state = DriverState(slow, store, "md", seed=0, threads=1, out=None, n_trials=4)
    s = slow.ask(NONE, n_trials=4)
    _as_driver(slow, s.trial, host=slow.driver["host"], pid=dead_pid())  # as if its driver had died
    assert other.reclaim(lambda n: store.mark_interrupted("md", INTERRUPTED, [n])) == [s.number]  # no row yet
    start_row(state, s)  # Ray starts the trial only now
    assert slow.finish(s, {"quality": 2.0, "final": True}, None) == "RECLAIMED"
    write_outcome(state, s)
    row = {t.number: t for t in store.trials("md")}[s.number]
    assert (row.state, row.error) == ("FAIL", INTERRUPTED)
    state.close()
    store.close()
