"""`python -m nas.export study=NAME policy=...`: pick a point of a study and write conf/model/<name>.yaml.

Policies (nas.export.front): knee of the Pareto front; max_quality under max_compute; min_compute
above min_quality_ratio of the dense quality; or a trial number. With several compute objectives, knee,
max_compute and min_compute read the primary one (the first of the study's list). The file is the chosen trial's
target-size ArchConfig (what its compute objective describes), with provenance in a header comment;
`python -m nas.train model=<name>` trains it. `verify=true` also measures the proxy's fidelity against a
reference proxy (nas.reference).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.export.front import Point, Policy, StudyPoints, load_points, select
from nas.model.config import ArchConfig
from nas.profiles import conf_dir, hydra_entry
from nas.reference import describe
from nas.store import DEFAULT_URL, Fidelity, Store, code_version

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Exported:
    """The outcome of an export: the chosen point, the file written and, with verify, the fidelity check."""

    point: Point
    compute_keys: tuple[str, ...]
    name: str
    path: Path
    fidelity: Fidelity | None = None


def check_name(name: str) -> None:
    """Refuse names that are not a plain file stem (path separators, leading dots, spaces)."""
    if "/" in name or "\\" in name:
        raise ValueError(f"name={name!r} contains a path separator: expected a plain name, written to conf/model/")
    if not _NAME.match(name):
        raise ValueError(f"name={name!r} is invalid: expected letters, digits, '_', '-' or '.', not starting with '.'")


def model_text(point: Point, sp: StudyPoints, policy: Policy, name: str) -> str:
    """The config file: a provenance header comment, then the trial's target-size ArchConfig as YAML."""
    arch = ArchConfig.from_dict(point.trial.target_arch or point.trial.arch)
    study, config = sp.study, sp.study.config
    objectives = " ".join(f"{k}={v:.6g}" for k, v in (point.trial.objectives or {}).items())
    dense = sp.dense_quality()
    ratio = f" (quality ratio to dense {dense / point.quality:.4f})" if dense and point.quality > 0 else ""
    bound = " ".join(f"{k}={v}" for k, v in policy.to_dict().items() if k != "policy")
    scale = "target-size" if point.trial.target_arch else "proxy-size (the trial has no target arch)"
    header = [
        f"Exported by `python -m nas.export`; train it with: python -m nas.train model={name}",
        f"study: {study.name} (search space {study.search_space.get('name', '?')}, space hash {study.space_hash[:12]})",
        f"trial: {point.number} chosen by policy={policy.name}{' ' + bound if bound else ''}",
        f"objectives: {objectives}{ratio}",
        ", ".join(f"{group}: {(config.get(group) or {}).get('name', '?')}"
                  for group in ("proxy", "task", "target", "hardware")),
        f"params: {point.trial.params}",
        f"arch: the trial's {scale} ArchConfig",
        f"code: {code_version()} at export; the study ran {study.code_version}",
        f"exported: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ]
    return "".join(f"# {line}\n" for line in header) + arch.to_yaml()


def export(store: Store, study: str, policy: Policy, *, name: str | None = None, model_dir: str | Path | None = None,
           force: bool = False) -> Exported:
    """Choose a point of the study by `policy`, write <model_dir>/<name>.yaml and record the export in the store."""
    if name is not None:
        check_name(name)
    sp = load_points(store, study)
    point = select(sp, policy)
    name = name if name is not None else f"{study}-trial{point.number}"
    check_name(name)
    folder = Path(model_dir) if model_dir is not None else conf_dir() / "model"
    path = folder / f"{name}.yaml"
    if path.exists() and not force:
        raise ValueError(f"{path} already exists and is kept: pass force=true to overwrite it, or choose another name")
    text = model_text(point, sp, policy, name)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    store.record_export(study, point.number, name, str(path), policy.to_dict(), dict(point.trial.objectives or {}))
    return Exported(point, sp.compute_keys, name, path)


def run_from_config(conf: dict[str, Any], out: Any = sys.stdout) -> Exported:
    """Export (and verify) from a composed conf/export.yaml as a plain dict; prints what it did."""
    study = conf.get("study")
    url = (conf.get("store") or {}).get("url") or DEFAULT_URL
    store = Store(url)
    try:
        if not study:
            names = ", ".join(s.name for s in store.studies()) or "none"
            raise ValueError(f"study is required: python -m nas.export study=NAME (studies in {url}: {names})")
        policy_name = conf.get("policy") or ("trial" if conf.get("trial") is not None else "knee")
        policy = Policy(policy_name, conf.get("max_compute"), conf.get("min_quality_ratio"), conf.get("dense_quality"),
                        conf.get("trial"))
        done = export(store, study, policy, name=conf.get("name"), model_dir=conf.get("model_dir"),
                      force=bool(conf.get("force")))
        print(f"exported {done.point.describe(done.compute_keys)} of study {study!r} by policy={policy.name} "
              f"-> {done.path}\ntrain it: python -m nas.train model={done.name}", file=out, flush=True)
        if conf.get("verify"):
            from nas.export.fidelity import verify  # trains models: torch is imported only when asked

            fidelity = verify(store, study, conf.get("verify_top_k", 3), device=conf.get("device", "auto"),
                              threads=conf.get("threads") or 1, progress=bool(conf.get("progress")))
            store.record_fidelity(study, fidelity)
            tau = "undefined (all tied)" if fidelity.kendall_tau is None else f"{fidelity.kendall_tau:.4f}"
            print(f"fidelity: trials {fidelity.trials} retrained at the reference proxy "
                  f"{describe(fidelity.reference or {})}: proxy quality "
                  f"{[round(q, 4) for q in fidelity.proxy_quality]}, reference "
                  f"{[round(q, 4) for q in fidelity.long_quality]}, Kendall tau-b = {tau}", file=out, flush=True)
            done = Exported(done.point, done.compute_keys, done.name, done.path, fidelity)
        return done
    finally:
        store.close()


def main() -> None:
    """The Hydra entry point; a bad value ends with one line on stderr and exit status 2."""
    hydra_entry("export", run_from_config)


if __name__ == "__main__":
    main()
