"""`python -m nas.train model=<name>`: train an exported architecture (conf/model/<name>.yaml) at full size.

Sizes come from `target=<conf/target name>` or the model file, with `size.*` overrides; the recipe
(steps, batch and micro-batch, lr, checkpoints, resume, evaluation, device, seed) from conf/train.yaml.
`export=hf` also writes the trained model as a Hugging Face transformers folder (nas.model.hf), <out_dir>/hf.
Its parts: spec (the run's sizes and recipe), loop (the training loop), checkpoint (save, resume, export).
"""

from __future__ import annotations

from typing import Any

from nas.model.config import ArchConfig
from nas.profiles import hydra_entry
from nas.train.loop import TrainResult, train
from nas.train.spec import TrainSpec, sized_arch

__all__ = ["TrainResult", "TrainSpec", "run_from_config", "sized_arch", "train"]

_ARCH_KEYS = ("model", "target", "size", "export")
EXPORTS = ("hf",)


def check_export(export: Any, arch: ArchConfig) -> None:
    """export=null or hf; hf needs the extra and an architecture a transformers family expresses (checked before
    training: a run is not spent on a model that cannot be written)."""
    if export is None:
        return
    if export not in EXPORTS:
        raise ValueError(f"export={export!r} is invalid: expected null or one of {', '.join(EXPORTS)}")
    from nas.model.hf import refusal, require_hf

    require_hf()
    refused = refusal(arch)
    if refused is not None:
        raise ValueError(f"export=hf cannot write this model: {refused}")


def run_from_config(conf: dict[str, Any]) -> TrainResult:
    """Train from a composed conf/train.yaml as a plain dict (model, target, size, export and the TrainSpec keys);
    export=hf also writes the trained model as a transformers folder, <out_dir>/hf."""
    arch: ArchConfig = sized_arch(conf["model"], conf.get("size"), conf.get("target"))
    spec = TrainSpec.from_dict({k: v for k, v in conf.items() if k not in _ARCH_KEYS})
    check_export(conf.get("export"), arch)
    result = train(arch, spec)
    last = max(result.evals) if result.evals else None
    summary = f"trained steps={result.start_step}..{spec.steps} out_dir={result.out_dir}"
    if last is not None:
        summary += f" val_loss={result.evals[last]['val_loss']:.4f}"
    print(summary, flush=True)
    if conf.get("export") == "hf" and result.checkpoint is not None:
        from nas.train.checkpoint import export_checkpoint

        export_checkpoint(str(result.checkpoint), str(result.out_dir / "hf"), force=True)
    return result


def main() -> None:
    """The Hydra entry point; a bad value ends with one line on stderr and exit status 2."""
    hydra_entry("train", run_from_config)

