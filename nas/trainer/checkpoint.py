"""Checkpoints of the main trainer: model, optimizer, step, RNG and data-sampler states, written atomically."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(out_dir: str | Path) -> Path:
    """The folder holding a run's checkpoints."""
    return Path(out_dir) / "checkpoints"


def checkpoints(out_dir: str | Path) -> list[Path]:
    """A run's checkpoints, oldest first."""
    folder = checkpoint_dir(out_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def rng_states(data_gen: torch.Generator) -> dict[str, Any]:
    """Every random state a training step reads: torch (CPU, CUDA), the data sampler, Python, NumPy."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "data": data_gen.get_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }


def restore_rng_states(states: dict[str, Any], data_gen: torch.Generator) -> None:
    """Put back the random states saved by rng_states."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    data_gen.set_state(states["data"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])


def save_checkpoint(out_dir: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write out_dir/checkpoints/step_<step>.pt (via a temporary file) and prune all but the newest `keep`."""
    folder = checkpoint_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save({**state, "step": step}, tmp)
    os.replace(tmp, path)
    for old in checkpoints(out_dir)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"resume={str(path)!r}: no such checkpoint file")
    return torch.load(path, map_location="cpu", weights_only=False)


def resume_path(resume: bool | str, out_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: None (fresh run), the newest in out_dir (true) or a named file."""
    if resume is False:
        return None
    if isinstance(resume, str):
        return Path(resume)
    found = checkpoints(out_dir)
    if not found:
        raise ValueError(f"resume=true but {checkpoint_dir(out_dir)} holds no checkpoint: "
                         "drop resume=true to start a new run")
    return found[-1]
