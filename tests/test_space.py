"""Search spaces: the shipped files load; conditions hold when sampling; bad files name file, key and value."""

from __future__ import annotations

import optuna
import pytest
import yaml

from nas.model.config import ArchConfig
from nas.study.space import SpaceError, load, parse, path_of

BASE = ArchConfig(seq_len=64, n_layers=2, d_model=64, n_heads=4)  # the tiny proxy's dense architecture
SHIPPED = ("sparse_attn", "head_grouping", "sharing", "precision", "full", "layout")
DEEP = ArchConfig(seq_len=64, n_layers=4, d_model=64, n_heads=4)  # the layout space's 4-layer proxy


def base_of(name: str) -> ArchConfig:
    return DEEP if name == "layout" else BASE


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_sample_valid_architectures(name):
    base = base_of(name)
    spec = load(path_of(name), base)
    assert spec.name == name
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        params = spec.suggest(trial)
        arch = base.replace(**{k: v if k != "precision" else {**base.precision.__dict__, **v}
                               for k, v in spec.knobs(params).items()})
        assert set(params) == set(trial.params)
        if "attention" in params:  # conditions: local_global knobs exist exactly when attention is local_global
            local = {"window", "global_tokens", "gate", "global_every", "global_layers"} & {p.name for p in spec.params}
            assert (local <= set(params)) == (params["attention"] == "local_global")
            assert ("window" in params) == (params["attention"] == "local_global")
            if "window" in params:
                assert 4 <= params["window"] <= 16 < BASE.seq_len
        if params.get("kv_heads") is not None:
            assert BASE.n_heads % params["kv_heads"] == 0
        if params.get("sharing") == "ffn_block_diag":
            assert arch.sharing_scope == "ffn" and "sharing_scope" not in params
        study.tell(trial, 0.0)


def test_baseline_is_dense_and_digest_identifies_the_space():
    sparse, grouping = load(path_of("sparse_attn"), BASE), load(path_of("head_grouping"), BASE)
    assert sparse.knobs(dict(sparse.baseline)) == {"attention": "dense"}
    assert grouping.knobs(dict(grouping.baseline)) == {"kv_heads": None, "group_share": "kv"}
    assert sparse.digest() == load(path_of("sparse_attn"), BASE).digest() != grouping.digest()


# the shipped sparse_attn space's digest: stable across releases unless the file changes (it last changed when it
# began to search the layer pattern, global_every)
SPARSE_DIGEST = "fd6eb8a5b42d220cf0dc346d2d29b2930f5d1ebb1980d1efab99fd41dc9018a9"


def test_the_stored_copy_of_a_space_parses_back_to_the_same_space():
    from nas.study.space import parse

    for name in SHIPPED:
        spec = load(path_of(name), base_of(name))
        stored = spec.to_dict()
        if name == "sparse_attn":
            assert stored["params"]["global_tokens"]["low"] == 0  # a bound of 0 is part of the space
        again = parse(stored, f"stored {name}", base_of(name))
        assert again.to_dict() == stored and again.digest() == spec.digest()
    # bounds of 0 kept in to_dict do not change the digest
    assert load(path_of("sparse_attn"), BASE).digest() == SPARSE_DIGEST


def test_grid_values_follow_step_and_choices():
    spec = load(path_of("sparse_attn"), BASE)
    grid = spec.grid()
    assert grid["global_tokens"] == [0, 2, 4]
    assert grid["attention"] == ["dense", "local_global"]
    assert grid["window"] == list(range(4, 17))
    assert grid["global_every"] == [None, 2]  # at the proxy's 2 layers: none, or every other layer global


def test_the_layout_space_places_global_layers_explicitly_at_four_layers():
    spec = load(path_of("layout"), DEEP)
    placements = spec.grid()["global_layers"]
    archs = [DEEP.replace(**spec.knobs({"attention": "local_global", "window": 8, "global_layers": p}))
             for p in placements]
    kinds = {tuple(a.layer_attention(i).kind for i in range(4)) for a in archs}
    assert len(kinds) == len(placements)  # every choice is a different layout
    assert ("local", "local", "local", "global") in kinds and ("local",) * 4 in kinds
    from nas.cost import apply_knobs, load_target

    target = load_target("llama3.2_1b_32k")[0]  # 16 layers: each proxy layer a band of 4, so none merge
    at_target = {tuple(apply_knobs(target, a).layer_attention(i).kind for i in range(16)) for a in archs}
    assert len(at_target) == len(placements)
    with pytest.raises(SpaceError, match=r"layout.yaml: params.global_layers='2' is invalid: expected a list of "
                                         r"layer indices in 0..1"):
        load(path_of("layout"), BASE)  # layer 3 does not exist at 2 layers: refused when the space is read


def _good() -> dict:
    return yaml.safe_load(path_of("sparse_attn").read_text())


def _with(path: str, value) -> dict:
    data = _good()
    node = data
    *heads, last = path.split("/")
    for h in heads:
        node = node[h]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()
BAD = [
    (_with("params/window/high", 65), "params.window", "65", "must be <= seq_len=64 at the proxy's sizes"),
    (_with("params/window/type", "integer"), "params.window.type", "'integer'", "int, float, categorical"),
    (_with("params/window/low", 200), "params.window.high", "16", "above low=200"),
    (_with("params/window/low", "8"), "params.window.low", "'8'", "integer"),
    (_with("params/window/step", 4), "params.window.step", "4", "log scale"),
    (_with("params/attention/choices", ["dense", "sparse"]), "params.attention", "'sparse'", "attention"),
    (_with("params/gate/when", {"window_size": 3}), "params.gate.when.window_size", "3", "parameter listed before"),
    (_with("params/windw", {"type": "int", "low": 1, "high": 2}), "params.windw", "", "not a knob"),
    (_with("params/window/bogus", 1), "params.window.bogus", "1", "valid keys"),
    (_with("baseline/attention", "local_global"), "baseline.window", "None", "missing"),
    (_with("baseline/window", 16), "baseline.window", "16", "conditions do not hold"),
    (_with("params", {}), "params", "{}", "non-empty"),
    (_with("name", _DELETE), "name", "None", "non-empty string"),
    ({**_good(), "extra": 1}, "extra", "1", "unknown key"),
    (_with("objectives", ["flops_ratio", "speed"]), "objectives", "'speed'",
     "valid are flops_ratio, time_ratio, memory_ratio, unique_params_ratio, kv_cache_ratio, prefill_time_ratio, "
     "decode_time_ratio"),
    (_with("objectives", ["flops_ratio", "flops_ratio"]), "objectives", "'flops_ratio'", "distinct"),
    (_with("objectives", []), "objectives", "[]", "non-empty"),
    (_with("defaults", [{"override /sampler@_global_.sampler": "tpe"}]), "defaults", "tpe", "may only be"),
    (_with("defaults", [{"override /task@_global_.task": "nope"}]), "defaults.override /task@_global_.task",
     "'nope'", "conf/task/*.yaml"),
]


@pytest.mark.parametrize("data,key,value,hint", BAD, ids=[b[1] + ":" + b[3][:12] for b in BAD])
def test_bad_space_errors_name_file_key_and_value(tmp_path, data, key, value, hint):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpaceError) as err:
        load(path, BASE)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}=") and value in message and hint in message


def test_divides_and_implies_are_checked():
    data = yaml.safe_load(path_of("head_grouping").read_text())
    data["params"]["kv_heads"]["choices"] = [None, 3]
    with pytest.raises(SpaceError, match=r"params.kv_heads=3 is invalid: must divide n_heads=4 at the proxy's sizes"):
        parse(data, "hg.yaml", BASE)
    data = yaml.safe_load(path_of("sharing").read_text())
    data["params"]["sharing"]["implies"] = {"ffn_block_diag": {"sharing_scope": "both"}}
    with pytest.raises(SpaceError,
                       match=r"sharing.yaml: params.sharing='ffn_block_diag' is invalid: .*sharing_scope=ffn"):
        parse(data, "sharing.yaml", BASE)


def test_unreadable_and_non_yaml_files(tmp_path):
    with pytest.raises(SpaceError, match="cannot read"):
        load(tmp_path / "missing.yaml", BASE)
    (tmp_path / "bad.yaml").write_text("name: x\nparams: [unclosed\n")
    with pytest.raises(SpaceError) as err:
        load(tmp_path / "bad.yaml", BASE)
    assert str(err.value) == (f"{tmp_path / 'bad.yaml'}: not valid YAML at line 3, column 1: expected ',' or ']', "
                              "but got '<stream end>' (while parsing a flow sequence at line 2, column 9)")
    (tmp_path / "binary.yaml").write_bytes(b"name: x\n\xff\xfe")
    with pytest.raises(SpaceError, match=r"binary.yaml: not valid YAML: byte 8 is not UTF-8 text"):
        load(tmp_path / "binary.yaml", BASE)


# compute objectives each shipped space declares, and the task / target it defaults to (search_spaces/*.yaml)
DECLARED = {
    "sparse_attn": (("flops_ratio", "kv_cache_ratio", "decode_time_ratio"), "long_range", "llama3.2_1b_32k"),
    "head_grouping": (("flops_ratio", "memory_ratio", "kv_cache_ratio"), "capacity", "llama3.2_1b_32k"),
    "sharing": (("unique_params_ratio", "memory_ratio"), "capacity", "llama3.2_1b_32k"),
    "precision": (("time_ratio", "memory_ratio"), "numeric", "llama3.2_1b_32k"),
    "full": (("flops_ratio", "unique_params_ratio", "time_ratio"), "long_range", "llama3.2_1b_32k"),
    "layout": (("flops_ratio", "kv_cache_ratio", "decode_time_ratio"), "long_range", "llama3.2_1b_32k"),
}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_declared_compute_objective_moves_with_the_knobs(name):
    """The point of a space's `objectives`: each one varies across its choices, at gpt_1b and at its own target."""
    from nas.cost import estimate
    from nas.evaluation.proxy import load_proxy, proxy_arch

    spec = load(path_of(name), base_of(name))
    keys, task, target = DECLARED[name]
    data = yaml.safe_load(path_of(name).read_text())
    assert spec.objectives == keys and spec.to_dict()["objectives"] == list(keys)
    # 2 layers merge sharing patterns; the attention spaces train twice as long (far recall at the adequacy check)
    own = {"sharing": "tiny_deep", "sparse_attn": "tiny_2m", "full": "tiny_2m", "layout": "tiny_deep_2m"}
    proxy = [{"override /proxy@_global_.proxy": own[name]}] if name in own else []
    assert data["defaults"] == proxy + [{"override /task@_global_.task": task},
                                        {"override /target@_global_.target": target}]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    samples = [spec.knobs(spec.suggest(study.ask())) for _ in range(24)] + [spec.knobs(dict(spec.baseline))]
    for where in {"gpt_1b", target}:
        sizes = load_proxy("tiny_deep_2m" if name == "layout" else "tiny")
        costs = [estimate(proxy_arch(k, sizes), target=where).to_dict() for k in samples]
        for key in keys:
            assert len({round(c[key], 9) for c in costs}) > 1, f"{name}: {key} does not vary at {where}"


def test_a_space_without_objectives_keeps_the_old_single_objective():
    data = _good()
    del data["objectives"], data["defaults"]
    spec = parse(data, "old.yaml", BASE)
    assert spec.objectives == ("flops_ratio",)
    assert spec.digest() == load(path_of("sparse_attn"), BASE).digest()  # objectives are not the space's identity
