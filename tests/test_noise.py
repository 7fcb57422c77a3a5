"""nas.evaluation.noise and the search runner's seeds: common random numbers across trials, proxy.seeds averaging, and
the proxy's seed noise measured once (beside the adequacy check, in worker processes) and cached."""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest
import torch

from nas.evaluation import adequacy, noise
from nas.evaluation.data import TaskData, TaskSpec
from nas.evaluation.proxy import ProxySpec, load_proxy, proxy_arch
from nas.search.runner import ProxyRunner
from nas.study.space import load, path_of

MICRO = replace(load_proxy("tiny"), name="micro", n_layers=2, d_model=32, n_heads=4, seq_len=32, batch_size=4,
                warmup_steps=2, budget_tokens=12 * 4 * 32, rungs=3, eval_batches=1)
DENSE = {"attention": "dense"}
SPARSE = {"attention": "local_global", "window": 8, "global_tokens": 2, "gate": "dynamic"}


@pytest.fixture
def mixed_task(tmp_path) -> TaskSpec:
    """LM rows and MQAR rows in every batch (the long_range task's kind), on a small corpus."""
    (tmp_path / "c.txt").write_text("def mul(a, b):\n    return a * b\n\n" * 400)
    return TaskSpec(name="long_range", kind="mixed", corpus=str(tmp_path / "c.txt"),
                    mqar={"vocab": 16, "num_pairs": 4, "min_distance": 4},
                    objective={"bpb_late": 1.0, "mqar_error": 1.0})


def _recorded_batches(monkeypatch) -> list:
    """Every batch TaskData.batch draws from here on (training and validation), in order."""
    seen: list = []
    original = TaskData.batch

    def batch(self, batch_size, gen, split="train"):
        b = original(self, batch_size, gen, split)
        seen.append((split, b))
        return b

    monkeypatch.setattr(TaskData, "batch", batch)
    return seen


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        sa == sb and torch.equal(x.x, y.x) and torch.equal(x.y, y.y) and x.n_lm == y.n_lm
        and (x.dist is None and y.dist is None or torch.equal(x.dist, y.dist)) for (sa, x), (sb, y) in zip(a, b))


def test_trials_of_different_knobs_see_the_same_batches(monkeypatch, mixed_task, tmp_path) -> None:
    """Common random numbers: the study's seed fixes the data order; the knobs (and the model they build) do not."""
    seen = _recorded_batches(monkeypatch)
    runner = ProxyRunner(MICRO, mixed_task)
    dense = [r["quality"] for r in runner(DENSE, arch=None, seed=3, threads=1)]
    first = list(seen)
    seen.clear()
    sparse = [r["quality"] for r in runner(SPARSE, arch=proxy_arch(SPARSE, MICRO), seed=3, threads=1)]
    second = list(seen)
    assert sum(s == "train" for s, _ in first) == 12 and sum(s == "val" for s, _ in first) == 1  # built once
    assert _same(first, second)
    assert dense != sparse  # different models on the same data
    seen.clear()
    list(runner(DENSE, arch=None, seed=4, threads=1))
    train3 = [b for b in first if b[0] == "train"]
    assert not _same(train3, [b for b in seen if b[0] == "train"])  # another seed: another order
    assert _same([b for b in first if b[0] == "val"], [b for b in seen if b[0] == "val"])  # the same validation set


def test_a_two_seed_trial_reports_the_mean_of_two_one_seed_runs(mixed_task) -> None:
    one = ProxyRunner(MICRO, mixed_task)
    two = ProxyRunner(replace(MICRO, seeds=2), mixed_task)
    a = list(one(SPARSE, arch=None, seed=5, threads=1))
    b = list(one(SPARSE, arch=None, seed=6, threads=1))
    both = list(two(SPARSE, arch=None, seed=5, threads=1))
    assert [r["step"] for r in both] == [r["step"] for r in a] and [r["final"] for r in both] == [False, False, True]
    for ra, rb, r2 in zip(a, b, both):
        assert ra["quality"] != rb["quality"]
        assert r2["quality"] == pytest.approx((ra["quality"] + rb["quality"]) / 2, rel=1e-12)
        assert r2["metrics"]["quality_seeds"] == [ra["quality"], rb["quality"]] and r2["metrics"]["seeds"] == [5, 6]
        assert r2["tokens"] == ra["tokens"] + rb["tokens"]  # the compute both seeds spent
        for key in ("bpb_late", "mqar_acc"):
            assert r2["metrics"]["metrics"][key] == pytest.approx(
                (ra["metrics"]["metrics"][key] + rb["metrics"]["metrics"][key]) / 2, rel=1e-12)
        assert r2["metrics"]["val_loss"] == pytest.approx((ra["metrics"]["val_loss"] + rb["metrics"]["val_loss"]) / 2)
    assert "quality_seeds" not in a[-1]["metrics"]  # one seed: reported as before


def test_proxy_seeds_must_be_a_positive_integer() -> None:
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=rf"proxy.seeds={bad!r} is invalid: expected an integer >= 1"):
            ProxySpec.from_dict({**MICRO.__dict__, "seeds": bad})
    assert load_proxy("tiny_2m").seeds == 1


def test_the_noise_is_measured_beside_the_adequacy_check_and_cached(mixed_task, tmp_path, monkeypatch) -> None:
    spec = load(path_of("sparse_attn"), proxy_arch({}, MICRO))
    root = tmp_path / "noise"
    result = adequacy.check_adequacy(spec, MICRO, mixed_task, device="cpu", cache_dir=tmp_path, noise_root=root)
    found = result.noise
    assert found is not None and found["seeds"] == [0, 1, 2] and not found["cached"]
    assert found["qualities"][0] == result.quality  # the check's own run is seed 0
    # the worker processes' runs are the runs this process trains at those seeds
    for seed, q in zip((1, 2), found["qualities"][1:]):
        assert q == pytest.approx(noise.dense_quality(spec.knobs(dict(spec.baseline)), MICRO, mixed_task, None, seed, 1,
                                                      "cpu", tmp_path), rel=1e-6)
    assert found["sd"] == pytest.approx(statistics.stdev(found["qualities"]))
    assert found["margin"] == pytest.approx(2 * 2 ** 0.5 * found["sd"]) and found["seeds_per_trial"] == 1
    assert (root / f"{found['key']}.json").exists()
    # a second study of the same proxy, task and budget pays nothing: no worker is started
    monkeypatch.setattr(noise.multiprocessing, "get_context", lambda *a: pytest.fail("trained again"))
    again = adequacy.check_adequacy(spec, replace(MICRO, seeds=4), mixed_task, device="cpu", cache_dir=tmp_path,
                                    noise_root=root)
    assert again.noise["cached"] and again.noise["qualities"] == found["qualities"]
    assert again.noise["margin"] == pytest.approx(found["margin"] / 2)  # four seeds a trial: half the margin
    # another budget is another measurement
    assert noise.read_cached(MICRO, mixed_task, MICRO.budget_tokens // 2, 0, root) is None
    assert noise.read_cached(MICRO, mixed_task, MICRO.budget_tokens, 1, root) is None  # other seeds


def test_a_failed_check_leaves_no_worker_behind(mixed_task, tmp_path, monkeypatch) -> None:
    spec = load(path_of("sparse_attn"), proxy_arch({}, MICRO))
    jobs: list = []
    original = noise.NoiseJob.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        jobs.append(self)

    monkeypatch.setattr(noise.NoiseJob, "__init__", spy)
    monkeypatch.setattr(adequacy, "_run_checks", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        adequacy.check_adequacy(spec, MICRO, mixed_task, device="cpu", cache_dir=tmp_path, noise_root=tmp_path / "n")
    assert len(jobs) == 1 and jobs[0].pool is None
    assert not (tmp_path / "n").exists()  # nothing cached


def test_a_study_from_before_proxy_seeds_resumes_as_one_seed_a_trial() -> None:
    from nas.search.driver import _fixed

    old, new = {"proxy": {"name": "tiny_2m", "lr": 3e-3}}, {"proxy": {"name": "tiny_2m", "lr": 3e-3, "seeds": 1}}
    assert _fixed(old, "proxy") == _fixed(new, "proxy")
    assert _fixed(old, "proxy") != _fixed({"proxy": {**new["proxy"], "seeds": 2}}, "proxy")  # not comparable
