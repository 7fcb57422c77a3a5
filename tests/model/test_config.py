"""ArchConfig: round trips and one-line errors naming field, value and what is valid."""

from typing import Literal, get_args, get_origin, get_type_hints

import pytest

from nas.model import ArchConfig, PrecisionConfig


def test_round_trip_dict_and_yaml(tmp_path):
    cfg = ArchConfig(attention="local_global", window=16, global_tokens=2, gate="dynamic", kv_heads=2,
                     sharing="cycle", unique_layers=2, precision={"ffn": "adaptive", "attention": "bf16"})
    assert ArchConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "m.yaml"
    cfg.to_yaml(path)
    assert ArchConfig.from_yaml(path) == cfg


@pytest.mark.parametrize(
    ("changes", "field", "valid"),
    [
        ({"kv_heads": 3}, "kv_heads=3", "divide n_heads=4"),
        ({"attention": "local_global", "window": 0}, "window=0", ">= 1"),
        ({"attention": "local_global", "window": 8, "global_tokens": 256}, "global_tokens=256", "below seq_len=256"),
        ({"attention": "local_global"}, "window=None", "required with attention=local_global"),
        ({"sharing": "spiral"}, "sharing='spiral'", "cycle_rev"),
        ({"precision": {"ffn": "int4"}}, "precision.ffn='int4'", "fp8_e4m3"),
        ({"attention": "linear"}, "attention='linear'", "local_global"),
        ({"colour": 1}, "colour", "valid fields are"),
        ({"precision": {"speed": 1}}, "precision.speed", "valid fields are"),
        ({"gate": "dynamic"}, "gate='dynamic'", "local_global"),
        ({"sharing": "sequence", "n_layers": 4, "unique_layers": 3}, "unique_layers=3", "divide n_layers=4"),
        ({"intermediate_size": 0}, "intermediate_size=0", ">= 1"),
        ({"qk_norm": "yes"}, "qk_norm='yes'", "true or false"),
        ({"rope_theta": "5e5"}, "rope_theta='5e5'", "a number > 0"),  # YAML 1.1 reads 5e5 as a string
        ({"sharing": "ffn_block_diag", "ffn": "swiglu", "intermediate_size": 90}, "ffn_blocks=4",
         "the FFN width 90"),
    ],
)
def test_bad_config_names_field_value_and_valid(changes, field, valid):
    with pytest.raises(ValueError) as err:
        ArchConfig.from_dict(changes)
    message = str(err.value)
    assert field in message and valid in message and "\n" not in message


def test_sharing_scope_defaults_to_the_patterns_own():
    assert ArchConfig(sharing="ffn_block_diag").sharing_scope == "ffn"  # the only scope its sub-blocks allow
    assert ArchConfig(sharing="cycle").sharing_scope == "both" and ArchConfig().sharing_scope == "both"
    unset = ArchConfig.from_dict({"sharing": "ffn_block_diag", "sharing_scope": None})
    assert unset.to_dict()["sharing_scope"] == "ffn"
    with pytest.raises(ValueError, match=r"^ArchConfig.sharing_scope='both' is invalid: ffn_block_diag shares FFN "
                                         r"sub-blocks: use sharing_scope=ffn \(or leave it unset\)$"):
        ArchConfig(sharing="ffn_block_diag", sharing_scope="both")


def _choice_fields(cls: type) -> list[str]:
    """Fields typed Literal[...] (or Literal[...] | None)."""
    return [name for name, hint in get_type_hints(cls).items()
            if any(get_origin(h) is Literal for h in (hint, *get_args(hint)))]


@pytest.mark.parametrize("key", [*_choice_fields(ArchConfig),
                                 *(f"precision.{k}" for k in _choice_fields(PrecisionConfig))])
def test_every_literal_choice_field_is_checked(key):
    head, _, tail = key.partition(".")
    with pytest.raises(ValueError, match=rf"^ArchConfig.{key}='bogus' is invalid: expected one of "):
        ArchConfig.from_dict({head: {tail: "bogus"}} if tail else {head: "bogus"})
