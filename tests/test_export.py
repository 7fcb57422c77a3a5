"""nas.export: policies on a study seeded through the store API, the written file, refusals, fidelity (Kendall tau)."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest

from nas.export.command import export, run_from_config
from nas.export.fidelity import top_points
from nas.export.front import Policy, free_pick_line, knee, load_points, pareto_front, select
from nas.model.config import ArchConfig
from nas.study.store import Store

REPO = Path(__file__).resolve().parents[1]
PROXY = dict(name="micro", n_layers=1, d_model=16, n_heads=2, ffn_mult=2.0, seq_len=32, batch_size=4, lr=3e-3,
             weight_decay=0.1, warmup_steps=2, min_lr_ratio=0.1, grad_clip=1.0, budget_tokens=4 * 32 * 6, rungs=1,
             rung_base=2.0, eval_batches=1)
# (quality, flops_ratio, params) of COMPLETE trials 0..4; trial 0 is the dense baseline, trial 3 is dominated by 1
POINTS = [
    (1.00, 1.00, {"attention": "dense"}),
    (1.02, 0.50, {"attention": "local_global", "window": 16}),
    (1.10, 0.30, {"attention": "local_global", "window": 8}),
    (1.05, 0.60, {"attention": "local_global", "window": 24}),
    (1.50, 0.20, {"attention": "local_global", "window": 4}),
]


def _arch(params: dict, **sizes) -> dict:
    base = dict(seq_len=32, n_layers=2, d_model=16, n_heads=2, ffn_mult=2.0, kv_heads=1)
    return ArchConfig.from_dict({**base, **sizes, **params}).to_dict()


def seed_study(store: Store, name: str, corpus: Path, points=POINTS, extra_states=("PRUNED", "FAIL")) -> None:
    """A study with COMPLETE trials at `points`, then one trial in each of `extra_states`."""
    config = {"proxy": PROXY, "task": {"name": "lm", "kind": "lm", "corpus": str(corpus)}, "seed": 0,
              "budget_tokens": None, "objectives": {"compute": "flops_ratio"}, "target": {"name": "tiny_target"},
              "hardware": {"name": "cpu"}}
    store.create_study(name, config, {"name": "test_space", "baseline": {"attention": "dense"}}, "f" * 64)
    for number, (quality, compute, params) in enumerate(points):
        store.start_trial(name, number, params, _arch(params), target_arch=_arch(params, seq_len=64, d_model=32))
        store.finish_trial(name, number, "COMPLETE", objectives={"quality": quality, "flops_ratio": compute})
    for number, state in enumerate(extra_states, start=len(points)):
        store.start_trial(name, number, {"attention": "dense"}, _arch({"attention": "dense"}))
        store.finish_trial(name, number, state, objectives={"flops_ratio": 0.1})


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_bytes((REPO / "nas" / "model" / "attention.py").read_bytes() * 2)
    return path


@pytest.fixture()
def store(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    s = Store(f"sqlite:///{tmp_path / 'nas.db'}")
    seed_study(s, "s1", corpus)
    yield s
    s.close()


# ---- the front and the policies (oracles: hand-computed from POINTS) ---------------------


def test_front_drops_dominated_and_incomplete_trials(store):
    sp = load_points(store, "s1")
    assert [p.number for p in sp.points] == [0, 1, 2, 3, 4]
    assert [p.number for p in pareto_front(sp.points)] == [4, 2, 1, 0]
    assert sp.dense_quality() == 1.0
    assert sp.states == {"COMPLETE": 5, "PRUNED": 1, "FAIL": 1}


def test_knee_is_farthest_from_the_extremes_line(store):
    # normalised (compute, quality): 4 (0, 1), 2 (0.125, 0.2), 1 (0.375, 0.04), 0 (1, 0);
    # 1 - x - y: trial 2 0.675 > trial 1 0.585 > the extremes 0
    assert knee(pareto_front(load_points(store, "s1").points)).number == 2


@pytest.mark.parametrize("policy, expected", [
    (Policy("knee"), 2),
    (Policy("max_quality", max_compute=0.4), 2),
    (Policy("max_quality", max_compute=0.55), 1),
    (Policy("max_quality", max_compute=1.0), 0),
    (Policy("min_compute", min_quality_ratio=0.97), 1),  # 1.00 / 1.02 = 0.980
    (Policy("min_compute", min_quality_ratio=0.9), 2),  # 1.00 / 1.10 = 0.909
    (Policy("min_compute", min_quality_ratio=0.99), 0),  # only 1.00 / 1.00 >= 0.99
    (Policy("min_compute", min_quality_ratio=0.99, dense_quality=1.1), 2),  # 1.1 / 1.10 = 1.0; 1.1 / 1.5 < 0.99
    (Policy("trial", trial=3), 3),
])
def test_policies_pick_the_expected_trial(store, tmp_path, policy, expected):
    done = export(store, "s1", policy, name=f"m_{policy.name}", model_dir=tmp_path / "model", force=True)
    assert done.point.number == expected


def test_the_free_rule_is_reported_beside_a_budgeted_pick(store):
    sp = load_points(store, "s1")
    policy = Policy("max_quality", max_compute=0.65)  # trials 1 (1.02 at 0.50) and 3 (1.05 at 0.60) fit
    chosen = select(sp, policy)
    unmeasured = free_pick_line(sp, policy, chosen)
    assert chosen.number == 1 and unmeasured.startswith("free rule (the most flops_ratio within max_compute=0.65): "
                                                        "trial 3 (")
    assert "the proxy's pick, trial 1, is better by 0.0300 (the proxy's seed noise is not measured" in unmeasured

    def with_margin(margin: float):
        study = dataclasses.replace(sp.study, adequacy={"noise": {"margin": margin, "sd": margin / 2.83}})
        return free_pick_line(dataclasses.replace(sp, study=study), policy, chosen)

    assert "better by 0.0300 beyond the proxy's seed noise (tie margin 0.0200)" in with_margin(0.02)
    assert "within the proxy's seed noise (tie margin 0.0500): at this proxy the two are a tie" in with_margin(0.05)
    assert free_pick_line(sp, Policy("knee"), chosen) is None


def test_exported_file_is_the_target_arch_with_provenance(store, tmp_path):
    done = export(store, "s1", Policy("max_quality", max_compute=0.4), name="pick", model_dir=tmp_path / "model")
    text = done.path.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("study: s1" in line for line in header)
    assert any("trial: 2 chosen by policy=max_quality max_compute=0.4" in line for line in header)
    assert any("quality=1.1" in line and "flops_ratio=0.3" in line for line in header)
    assert any(line.startswith("# code: ") for line in header)
    loaded = ArchConfig.from_yaml(done.path)
    assert loaded.to_dict() == _arch(POINTS[2][2], seq_len=64, d_model=32)
    rows = store.exports("s1")
    assert [(r["trial"], r["name"], r["policy"]) for r in rows] == [(2, "pick", {"policy": "max_quality",
                                                                                 "max_compute": 0.4})]


# ---- refusals ----------------------------------------------------------------------------


def test_budget_no_point_meets_names_the_closest(store, tmp_path):
    with pytest.raises(ValueError, match=r"flops_ratio <= max_compute=0.1: the closest is trial 4 "
                                         r"\(quality=1.5000, flops_ratio=0.2000\)"):
        export(store, "s1", Policy("max_quality", max_compute=0.1), model_dir=tmp_path)
    with pytest.raises(ValueError, match=r"min_quality_ratio=1.01: the closest is trial 0 .*ratio 1.0000"):
        export(store, "s1", Policy("min_compute", min_quality_ratio=1.01), model_dir=tmp_path)
    with pytest.raises(ValueError, match=r"trial=5 is not a COMPLETE trial of study 's1': the closest is trial 4"):
        export(store, "s1", Policy("trial", trial=5), model_dir=tmp_path)
    assert not list(tmp_path.glob("*.yaml"))


def test_empty_study_fails_clearly(store, tmp_path, corpus):
    seed_study(store, "empty", corpus, points=[], extra_states=("PRUNED",))
    with pytest.raises(ValueError, match=r"study='empty' has no COMPLETE trial with objectives quality and "
                                         r"flops_ratio \(1 PRUNED\): nothing to export"):
        export(store, "empty", Policy("knee"), model_dir=tmp_path)
    with pytest.raises(ValueError, match=r"study='nope' not found .*studies are s1, empty"):
        export(store, "nope", Policy("knee"), model_dir=tmp_path)


@pytest.mark.parametrize("name", ["a/b", "..\\x", ".hidden", ""])
def test_names_with_separators_are_refused(store, tmp_path, name):
    with pytest.raises(ValueError, match="name="):
        export(store, "s1", Policy("knee"), name=name, model_dir=tmp_path / "model")
    assert not (tmp_path / "model").exists() and not (tmp_path / "b.yaml").exists()


def test_existing_file_kept_unless_force(store, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "mine.yaml").write_text("# hand-written\n")
    with pytest.raises(ValueError, match=r"mine.yaml already exists and is kept: pass force=true"):
        export(store, "s1", Policy("knee"), name="mine", model_dir=folder)
    assert (folder / "mine.yaml").read_text() == "# hand-written\n"
    export(store, "s1", Policy("knee"), name="mine", model_dir=folder, force=True)
    assert ArchConfig.from_yaml(folder / "mine.yaml").window == 8
    assert len(store.exports("s1")) == 1


def test_policy_needs_its_bound():
    with pytest.raises(ValueError, match="policy=max_quality needs max_compute=<value>"):
        Policy("max_quality")
    with pytest.raises(ValueError, match="policy='best' is unknown: expected one of knee, max_quality"):
        Policy("best")


def test_cli_exports_and_refuses_in_one_line(store, tmp_path):
    cmd = [sys.executable, "-m", "nas.export", "study=s1", f"store.url={store.url}", f"model_dir={tmp_path / 'm'}"]
    ok = subprocess.run(cmd + ["policy=max_quality", "max_compute=0.55", "name=cli"], capture_output=True,
                        text=True, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "exported trial 1" in ok.stdout and (tmp_path / "m" / "cli.yaml").is_file()
    assert "free rule (the most flops_ratio within max_compute=0.55): trial 1, the same pick" in ok.stdout
    bad = subprocess.run(cmd + ["name=x/y"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: name='x/y' contains a path separator: expected a plain name, "
                                               "written to conf/model/"]


@pytest.mark.parametrize("options, message", [
    ({"verify": True, "verify_top_k": 1}, "verify_top_k=1 is invalid: expected an integer >= 2"),
    ({"verify": "maybe"}, "verify='maybe' is invalid: expected true or false"),
    ({"force": "yes"}, "force='yes' is invalid: expected true or false"),
    ({"threads": 0}, "threads=0 is invalid: expected an integer >= 1"),
    ({"device": "tpu"}, "device='tpu' is invalid here: expected auto, cpu"),
    ({"policy": "trial", "trial": "one"}, "trial='one' is invalid: expected an integer >= 0"),
    ({"verify_factor": 1.0},
     "verify_factor is not a known key: valid keys are checkpoint, dense_quality, device, force, "),
    ({"store": {"url": None, "echo": True}}, "store.echo is not a known key: the valid key is url"),
    ({"model_dir": "corpus.txt/models"}, "model_dir='{tmp}/corpus.txt/models' is invalid: {tmp}/corpus.txt is a "
                                         "file, expected a folder"),
])
def test_every_option_is_checked_before_anything_is_written(store, tmp_path, corpus, options, message):
    conf = {"study": "s1", "store": {"url": store.url}, "model_dir": str(tmp_path / "m"), "name": "x", **options}
    if "model_dir" in options:
        conf["model_dir"] = str(tmp_path / options["model_dir"])
    if "store" in options:
        conf["store"] = {**options["store"], "url": store.url}
    with pytest.raises(ValueError) as err:
        run_from_config(conf, out=open(tmp_path / "log.txt", "w"))
    assert str(err.value).startswith(message.format(tmp=tmp_path))
    assert not (tmp_path / "m").exists() and store.exports("s1") == []


def test_verify_refuses_a_study_it_cannot_rank_before_writing(tmp_path, corpus):
    s = Store(f"sqlite:///{tmp_path / 'one.db'}")
    seed_study(s, "one", corpus, points=POINTS[:1])  # one COMPLETE trial: a ranking needs two
    with pytest.raises(ValueError, match=r"^verify needs at least 2 COMPLETE trials; study 'one' has 1$"):
        run_from_config({"study": "one", "store": {"url": s.url}, "model_dir": str(tmp_path / "m"), "verify": True})
    assert not (tmp_path / "m").exists() and s.exports("one") == []
    s.close()


def test_cli_unknown_option_is_one_line_exit_2_and_writes_nothing(store, tmp_path):
    cmd = [sys.executable, "-m", "nas.export", "study=s1", f"store.url={store.url}", f"model_dir={tmp_path / 'm'}",
           "verify=true", "verify_factor=1.0"]
    bad = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: Could not override 'verify_factor'. To append to your config "
                                               "use +verify_factor=1.0"]
    assert not (tmp_path / "m").exists() and store.exports("s1") == []


# ---- two compute objectives: the policies read the primary one (oracles: hand-computed from POINTS2) ----------

# (quality, flops_ratio, memory_ratio): 2 dominates 1 (same quality and flops, less memory); 4 is on the front only
# by its memory (flops and quality lose to 2); the front over all three is 0, 2, 3, 4, 5
POINTS2 = [(1.00, 1.00, 1.00), (1.02, 0.50, 0.90), (1.02, 0.50, 0.80), (1.10, 0.30, 1.10), (1.05, 0.60, 0.50),
           (1.50, 0.20, 1.00)]


@pytest.fixture()
def store2(tmp_path: Path, corpus: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'k2.db'}")
    config = {"proxy": PROXY, "task": {"name": "lm", "kind": "lm", "corpus": str(corpus)},
              "objectives": {"compute": ["flops_ratio", "memory_ratio"]}}
    s.create_study("s2", config, {"name": "test_space", "baseline": {"attention": "dense"}}, "f" * 64)
    for number, (quality, flops, memory) in enumerate(POINTS2):
        params = {"attention": "dense"} if number == 0 else {"attention": "local_global", "window": 4 + number}
        s.start_trial("s2", number, params, _arch(params))
        s.finish_trial("s2", number, "COMPLETE",
                       objectives={"quality": quality, "flops_ratio": flops, "memory_ratio": memory})
    yield s
    s.close()


def test_front_over_three_objectives(store2):
    sp = load_points(store2, "s2")
    assert sp.compute_keys == ("flops_ratio", "memory_ratio") and sp.points[4].compute == (0.60, 0.50)
    assert [p.number for p in pareto_front(sp.points)] == [5, 3, 2, 4, 0]  # by flops, then memory


@pytest.mark.parametrize("policy, expected", [
    (Policy("knee"), 3),  # the knee of the (flops, quality) front 5, 3, 2, 0 (POINTS' figures: 0.675 > 0.585)
    (Policy("max_quality", max_compute=0.55), 2),  # 1 and 2 tie on quality and flops: 2 uses less memory
    (Policy("min_compute", min_quality_ratio=0.97), 2),  # the same tie, the same break
    (Policy("max_quality", max_compute=1.0), 0),
])
def test_policies_read_the_primary_compute_objective(store2, tmp_path, policy, expected):
    done = export(store2, "s2", policy, name=f"k2_{policy.name}", model_dir=tmp_path, force=True)
    assert done.point.number == expected and done.compute_keys == ("flops_ratio", "memory_ratio")
    header = done.path.read_text().splitlines()
    assert any(line.startswith("# objectives: quality=") and "memory_ratio=" in line for line in header)


def test_refusals_name_the_primary_objective_and_show_every_one(store2, tmp_path):
    with pytest.raises(ValueError) as err:
        export(store2, "s2", Policy("max_quality", max_compute=0.1), model_dir=tmp_path)
    assert str(err.value) == ("no COMPLETE trial of study 's2' has flops_ratio <= max_compute=0.1: the closest is "
                              "trial 5 (quality=1.5000, flops_ratio=0.2000, memory_ratio=1.0000)")


# ---- fidelity ----------------------------------------------------------------------------


def test_top_points_fills_from_the_rest(store):
    points = load_points(store, "s1").points
    assert [p.number for p in top_points(points, 3)] == [0, 1, 2]
    assert [p.number for p in top_points(points, 5)] == [0, 1, 2, 4, 3]


def test_verify_retrains_top_k_at_the_reference_proxy_and_stores_tau(store, tmp_path):
    from nas.evaluation.data import TaskSpec
    from nas.evaluation.proxy import ProxySpec, train_proxy
    from nas.evaluation.scoring import quality

    done = run_from_config({"study": "s1", "store": {"url": store.url}, "model_dir": str(tmp_path), "name": "v",
                            "verify": True, "verify_top_k": 3, "device": "cpu"},
                           out=open(tmp_path / "log.txt", "w"))
    fid = done.fidelity
    assert fid.trials == [0, 1, 2] and fid.proxy_quality == [1.00, 1.02, 1.10]
    # nas.evaluation.reference's definition: 4x the depth, 4x the context, 8x the study's tokens
    assert (fid.reference["name"], fid.reference["n_layers"], fid.reference["seq_len"]) == ("micro-reference", 4, 128)
    assert fid.budget_tokens == fid.reference["budget_tokens"] == 8 * PROXY["budget_tokens"]
    assert fid.budget_factor == 8.0
    # oracle for tau: with 3 untied points tau-b = (concordant - discordant) / 3, from the signs of the differences
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    p, r = fid.proxy_quality, fid.long_quality
    pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
    assert len(set(r)) == 3 and fid.kendall_tau == pytest.approx(sum(sign(p[i] - p[j]) * sign(r[i] - r[j])
                                                                      for i, j in pairs) / 3)
    # oracle: the same reference run done directly
    reference = ProxySpec.from_dict(fid.reference)
    trial1 = load_points(store, "s1").points[1].trial
    reports = list(train_proxy(trial1.arch, reference, TaskSpec(corpus=str(tmp_path / "corpus.txt")),
                               budget_tokens=reference.budget_tokens, seed=0, device="cpu"))
    assert fid.long_quality[1] == quality(reports[-1], TaskSpec())
    stored = store.fidelity_results("s1")
    assert len(stored) == 1 and stored[0].trials == [0, 1, 2] and stored[0].long_quality == fid.long_quality
    assert stored[0].reference == fid.reference
    assert all(math.isfinite(q) for q in fid.long_quality)
    log = (tmp_path / "log.txt").read_text()
    assert "Kendall tau-b" in log
    assert "reference proxy micro-reference: 4 layers x 16 wide, 2 heads, 128 positions" in log


def test_records_tables_come_from_the_migrations_and_start_empty(store):
    from sqlalchemy import inspect

    assert {"nas_export", "nas_fidelity"} <= set(inspect(store.engine).get_table_names())
    assert store.fidelity_results("s1") == [] and store.exports("s1") == []


def test_export_from_a_store_that_does_not_exist_creates_nothing(tmp_path):
    from nas.export.command import run_from_config

    missing = tmp_path / "typo" / "nas.db"
    with pytest.raises(ValueError, match=r"typo/nas.db does not exist"):
        run_from_config({"study": "s", "store": {"url": f"sqlite:///{missing}"}, "policy": "knee"})
    assert not (tmp_path / "typo").exists()
