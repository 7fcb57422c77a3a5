"""The conf/ folder and its named YAML profiles (conf/<group>/<name>.yaml)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, cast

from nas.cli import fail

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout holding the `nas` package (an editable install)


def conf_dir() -> Path:
    """The repository's conf/ folder, found next to the `nas` package."""
    return REPO_ROOT / "conf"


def profile_names(group: str) -> list[str]:
    """Names of the YAML profiles in conf/<group>/."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def read_profile(group: str, name: str) -> tuple[Path, dict[str, Any]]:
    """(path, mapping) of conf/<group>/<name>.yaml; ValueError naming the valid names when it is unknown."""
    import yaml

    names = profile_names(group)
    if name not in names:
        raise ValueError(f"{group}={name!r} is unknown: expected one of {', '.join(names)} (conf/{group}/*.yaml)")
    path = conf_dir() / group / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
    return path, data


def reject_unknown(cls: type, data: dict[str, Any], prefix: str, noun: str = "key") -> None:
    """ValueError naming the first key of `data` that is not a field of dataclass `cls`, and the valid ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]} is not a known {noun}: valid {noun}s are {', '.join(sorted(known))}")


def strict_from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """cls(**data) for a dataclass; an unknown key raises ValueError naming it and the valid keys."""
    reject_unknown(cls, data, prefix)
    return cls(**data)


def _quote(value: str) -> str:
    """`value` as a Hydra override value: as it is when plain, else single-quoted with ' and \\ escaped."""
    return value if re.fullmatch(r"[A-Za-z0-9_./:+-]+", value) else "'" + re.sub(r"(['\\])", r"\\\1", value) + "'"


def expand_hf_target(overrides: list[str]) -> list[str]:
    """`target=hf:PATH` (a local transformers config) and `parent=hf:DIR` (a local checkpoint as the inherit
    parent) as the overrides Hydra composes: target=hf target.hf_path=PATH, ++proxy.parent=hf:DIR."""
    out = []
    for arg in overrides:
        if arg.startswith("target=hf:"):
            out += ["target=hf", f"target.hf_path={_quote(arg[len('target=hf:'):])}"]
        elif arg.startswith("parent=hf:"):
            out.append(f"++proxy.parent={_quote(arg[len('parent='):])}")
        else:
            out.append(arg)
    return out


def check_overrides(config_name: str, overrides: list[str]) -> None:
    """Compose conf/<config_name>.yaml with `overrides` (Hydra's compose API): a bad override ends as one line, exit 2.

    hydra.main would report it in several lines with exit status 1.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        message = str(err).split("Config search path:")[0]  # Hydra's list of its own search path is no help here
        fail(" ".join(message.split()))


def hydra_entry(config_name: str, body: Callable[[dict[str, Any]], Any],
                prepare: Callable[[], None] | None = None, adjust: Callable[[Any], None] | None = None) -> None:
    """Run `body` on conf/<config_name>.yaml composed by Hydra; a bad override or a ValueError ends as one stderr
    line, exit 2 (every command's one entry path). `prepare` registers what the composition needs (ConfigStore
    entries) first, a ValueError there ending the same way; `adjust` edits the composed DictConfig before it is
    resolved."""
    import hydra
    from omegaconf import DictConfig, OmegaConf

    if prepare is not None:
        try:
            prepare()
        except ValueError as err:
            fail(str(err))
    sys.argv[1:] = expand_hf_target(sys.argv[1:])
    if not any(arg.startswith("-") for arg in sys.argv[1:]):  # Hydra's own flags (--help, --cfg job) go to Hydra
        check_overrides(config_name, sys.argv[1:])

    @hydra.main(config_path=str(conf_dir()), config_name=config_name, version_base="1.3")
    def run(conf: DictConfig) -> None:
        try:
            if adjust is not None:
                adjust(conf)
            body(cast(dict[str, Any], OmegaConf.to_container(conf, resolve=True)))  # a DictConfig converts to a dict
        except ValueError as err:
            fail(str(err))

    run()
