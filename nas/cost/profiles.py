"""Named YAML profiles under conf/ (hardware/, target/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def conf_dir() -> Path:
    """The repository's conf/ folder, found next to the `nas` package (an editable install)."""
    return Path(__file__).resolve().parents[2] / "conf"


def profile_names(group: str) -> list[str]:
    """Names of the YAML profiles in conf/<group>/."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def read_profile(group: str, name: str) -> tuple[Path, dict[str, Any]]:
    """(path, mapping) of conf/<group>/<name>.yaml; ValueError naming the valid names when it is unknown."""
    import yaml

    names = profile_names(group)
    if name not in names:
        raise ValueError(f"{group}={name!r} is not a known profile in {conf_dir() / group}: "
                         f"valid are {', '.join(names)}")
    path = conf_dir() / group / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
    return path, data
