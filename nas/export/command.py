"""`python -m nas.export study=NAME policy=...`: pick a point of a study and write conf/model/<name>.yaml.

Policies (nas.export.front): knee of the Pareto front; max_quality under max_compute; min_compute
above min_quality_ratio of the dense quality; or a trial number. With several compute objectives, knee,
max_compute and min_compute read the primary one (the first of the study's list). The file is the chosen trial's
target-size ArchConfig (what its compute objective describes), with provenance in a header comment;
`python -m nas.train model=<name>` trains it. `verify=true` also measures the proxy's fidelity against a
reference proxy (nas.evaluation.reference).

`format=hf out=DIR` writes the chosen point as a Hugging Face transformers config.json + generation_config.json
instead (nas.model.hf picks the family and refuses, by name, a knob none can express; the policies then choose
among the points the format can express). `checkpoint=PATH format=hf out=DIR` writes a nas.train checkpoint's
architecture and trained weights (model.safetensors), for `AutoModelForCausalLM.from_pretrained(DIR)`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.checks import check_bool, check_int
from nas.evaluation.reference import describe
from nas.export.front import Point, Policy, StudyPoints, free_pick_line, load_points, select, select_expressible
from nas.model.config import ArchConfig
from nas.profiles import conf_dir, hydra_entry, strict_from_dict
from nas.study.store import DEFAULT_URL, Fidelity, Store, StoreError, code_version, shown_url, sqlite_file

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
FORMATS = ("nas", "hf")


@dataclass(frozen=True)
class Exported:
    """The outcome of an export: the chosen point, the file written and, with verify, the fidelity check."""

    point: Point
    compute_keys: tuple[str, ...]
    name: str
    path: Path
    fidelity: Fidelity | None = None
    free_pick: str | None = None  # policy=max_quality: the free rule's pick under the same budget (free_pick_line)


def check_name(name: str) -> None:
    """Refuse names that are not a plain file stem (path separators, leading dots, spaces)."""
    if "/" in name or "\\" in name:
        raise ValueError(f"name={name!r} contains a path separator: expected a plain name, written to conf/model/")
    if not _NAME.match(name):
        raise ValueError(f"name={name!r} is invalid: expected letters, digits, '_', '-' or '.', not starting with '.'")


def check_folder(key: str, folder: Path) -> None:
    """Refuse a folder that is a file or cannot be created or written (its nearest existing parent decides)."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{key}={str(folder)!r} is invalid: {existing} is a file, expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{key}={str(folder)!r} is invalid: {existing} is not writable")


@dataclass
class Options:
    """The keys of conf/export.yaml, every one checked on construction: nothing is written before they pass."""

    study: str | None = None
    policy: str | None = None
    max_compute: float | None = None
    min_quality_ratio: float | None = None
    dense_quality: float | None = None
    trial: int | None = None
    name: str | None = None
    model_dir: str | None = None
    force: bool = False
    store: dict[str, Any] = field(default_factory=dict)
    verify: bool = False
    verify_top_k: int = 3
    device: str = "auto"
    threads: int = 1
    progress: bool = False
    format: str = "nas"
    out: str | None = None
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        for key in ("study", "name"):  # Hydra reads study=2024 as a number
            value = getattr(self, key)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, key, str(value))
        self.chosen_policy()  # the policy's name and bounds
        if self.name is not None:
            check_name(self.name)
        if self.model_dir is not None:
            check_folder("model_dir", Path(self.model_dir))
        for key in ("force", "verify", "progress"):
            check_bool(key, getattr(self, key))
        check_int("verify_top_k", self.verify_top_k, low=2)
        check_int("threads", self.threads)
        if self.device != "auto":  # torch is imported only for a named device
            from nas.device import resolve_device

            resolve_device(str(self.device))
        self._check_format()
        if not isinstance(self.store, dict):
            raise ValueError(f"store={self.store!r} is invalid: expected a mapping such as store.url=<SQLAlchemy URL>")
        unknown = sorted(set(self.store) - {"url"})
        if unknown:
            raise ValueError(f"store.{unknown[0]} is not a known key: the valid key is url")

    def _check_format(self) -> None:
        """format, out and checkpoint agree: hf needs out (and the hf extra); a checkpoint is exported as hf."""
        if self.format not in FORMATS:
            raise ValueError(f"format={self.format!r} is unknown: expected one of {', '.join(FORMATS)}")
        if self.format == "nas":
            for key in ("out", "checkpoint"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}={getattr(self, key)!r} needs format=hf (format=nas writes "
                                     "conf/model/<name>.yaml)")
            return
        from nas.model.hf import check_out, require_hf

        require_hf()
        if self.out is None:
            raise ValueError("format=hf needs out=DIR: the folder that gets config.json (and model.safetensors)")
        check_folder("out", Path(self.out).parent)
        check_out(self.out, self.force)
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise ValueError(f"checkpoint={self.checkpoint!r}: no such file (a nas.train checkpoint: "
                             "<out_dir>/checkpoints/step_*.pt)")

    @classmethod
    def from_conf(cls, conf: dict[str, Any]) -> "Options":
        """The options of a composed conf/export.yaml; an unknown key raises ValueError naming the valid ones."""
        return strict_from_dict(cls, dict(conf), "")

    @property
    def url(self) -> str:
        """The store's SQLAlchemy URL (the default SQLite file when unset)."""
        return self.store.get("url") or DEFAULT_URL

    def chosen_policy(self) -> Policy:
        """The policy named, or `trial` when a trial number is given, else knee; ValueError on a bad bound."""
        name = self.policy or ("trial" if self.trial is not None else "knee")
        return Policy(name, self.max_compute, self.min_quality_ratio, self.dense_quality, self.trial)


def model_text(point: Point, sp: StudyPoints, policy: Policy, name: str) -> str:
    """The config file: a provenance header comment, then the trial's target-size ArchConfig as YAML."""
    arch = point_arch(point)
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
    partial = path.with_name(f".{path.name}.partial")  # the file appears only once the store has its record
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial.write_text(text)
        store.record_export(study, point.number, name, str(path), policy.to_dict(),
                            dict(point.trial.objectives or {}))
        partial.replace(path)
    except OSError as err:
        raise ValueError(f"{path}: cannot write it: {err.strerror or err}") from err
    finally:
        partial.unlink(missing_ok=True)
    return Exported(point, sp.compute_keys, name, path, free_pick=free_pick_line(sp, policy, point))


def point_arch(point: Point) -> ArchConfig:
    """The architecture an export writes: the trial's target-size ArchConfig (its proxy one when it has none)."""
    return ArchConfig.from_dict(point.trial.target_arch or point.trial.arch)


def export_hf(store: Store, study: str, policy: Policy, out: str, *, force: bool = False,
              report: Any = sys.stdout) -> Exported:
    """Choose, among the points a transformers family expresses, a point of the study by `policy`, write its
    config.json + generation_config.json to `out` and record the export; `report` gets the points passed over."""
    from nas.model.hf import refusal, write_hf

    sp = load_points(store, study)
    point, passed = select_expressible(sp, policy, lambda p: refusal(point_arch(p)), "hf")
    for p, why in passed:
        print(f"passed over {p.describe(sp.compute_keys)}: {why}", file=report, flush=True)
    written = write_hf(point_arch(point), out, force=force, record=lambda path: store.record_export(
        study, point.number, path.name, str(path), {**policy.to_dict(), "format": "hf"},
        dict(point.trial.objectives or {})))
    print(f"family: {written.family.architecture} (model_type {written.family.model_type}): {written.reason}",
          file=report, flush=True)
    return Exported(point, sp.compute_keys, written.out.name, written.out)


def open_existing(url: str) -> Store:
    """The store at `url`, which must exist already (exporting from a mistyped path creates nothing)."""
    path = sqlite_file(url) if url.startswith("sqlite") else None
    if path is not None and not path.exists():
        raise StoreError(f"store.url={shown_url(url)!r}: {path} does not exist; export reads the store a search "
                         "wrote (default: trials_db/nas.db)")
    return Store(url)


def run_from_config(conf: dict[str, Any], out: Any = sys.stdout) -> Exported | Path:
    """Export (and verify) from a composed conf/export.yaml as a plain dict; prints what it did (a checkpoint's
    export returns the folder written).

    Every option, and with verify=true the study's fitness for it, is checked before the file is written.
    """
    opts = Options.from_conf(conf)
    if opts.checkpoint is not None:
        from nas.train.checkpoint import export_checkpoint

        assert opts.out is not None  # Options checked it
        return export_checkpoint(opts.checkpoint, opts.out, opts.force, report=out)
    store = open_existing(opts.url)
    try:
        if not opts.study:
            names = ", ".join(s.name for s in store.studies()) or "none"
            raise ValueError(f"study is required: python -m nas.export study=NAME (studies in "
                             f"{shown_url(opts.url)}: {names})")
        if opts.verify:
            from nas.export.fidelity import plan_verify  # trains models: torch is imported only when asked

            plan_verify(load_points(store, opts.study), opts.verify_top_k)
        policy = opts.chosen_policy()
        if opts.format == "hf":
            assert opts.out is not None  # Options checked it
            done = export_hf(store, opts.study, policy, opts.out, force=opts.force, report=out)
            print(f"exported {done.point.describe(done.compute_keys)} of study {opts.study!r} by policy={policy.name} "
                  f"format=hf -> {done.path} (config only: the study trained proxies, not this model)\n"
                  "build it: transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained("
                  f"{str(done.path)!r})); trained weights: nas.train, then nas.export checkpoint=PATH format=hf",
                  file=out, flush=True)
        else:
            done = export(store, opts.study, policy, name=opts.name, model_dir=opts.model_dir, force=opts.force)
            print(f"exported {done.point.describe(done.compute_keys)} of study {opts.study!r} by "
                  f"policy={policy.name} -> {done.path}\ntrain it: python -m nas.train model={done.name}", file=out,
                  flush=True)
            if done.free_pick is not None:
                print(done.free_pick, file=out, flush=True)
        if opts.verify:
            from nas.export.fidelity import verify

            fidelity = verify(store, opts.study, opts.verify_top_k, device=opts.device, threads=opts.threads,
                              progress=opts.progress)
            store.record_fidelity(opts.study, fidelity)
            tau = "undefined (all tied)" if fidelity.kendall_tau is None else f"{fidelity.kendall_tau:.4f}"
            print(f"fidelity: trials {fidelity.trials} retrained at the reference proxy "
                  f"{describe(fidelity.reference or {})}: proxy quality "
                  f"{[round(q, 4) for q in fidelity.proxy_quality]}, reference "
                  f"{[round(q, 4) for q in fidelity.long_quality]}, Kendall tau-b = {tau}", file=out, flush=True)
            done = replace(done, fidelity=fidelity)
        return done
    finally:
        store.close()


def main() -> None:
    """The Hydra entry point; a bad value ends with one line on stderr and exit status 2."""
    hydra_entry("export", run_from_config)


if __name__ == "__main__":
    main()
