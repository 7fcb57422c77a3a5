"""Checkpoints of the main trainer: model, optimizer, step, RNG and data-sampler states, written atomically;
export_checkpoint writes one as a transformers model folder (nas.model.hf).

Everything in a checkpoint is a tensor or a plain Python value, so it loads with torch.load(weights_only=True):
a crafted file cannot run code.
"""

from __future__ import annotations

import os
import random
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

_NAME = re.compile(r"^step_(\d{8})\.pt$")
KEYS = ("arch", "model", "optimizer", "rng", "step")  # what every checkpoint holds


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read back (truncated, corrupt, or not a checkpoint)."""


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
        "python": random.getstate(),  # (version, tuple of ints, gauss or None): plain values
        "numpy": _numpy_state(),
    }


def _numpy_state() -> dict[str, Any]:
    """NumPy's legacy RNG state with its key array as a tensor (weights_only loads no ndarray)."""
    state = np.random.get_state()
    assert isinstance(state, tuple), "legacy=True (the default) returns the tuple form"
    kind, key, pos, has_gauss, gauss = state
    return {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def restore_rng_states(states: dict[str, Any], data_gen: torch.Generator) -> None:
    """Put back the random states saved by rng_states."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    data_gen.set_state(states["data"])
    random.setstate(states["python"])
    numpy = states["numpy"]
    np.random.set_state((numpy["kind"], numpy["key"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))


def save_checkpoint(out_dir: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write out_dir/checkpoints/step_<step>.pt (via a temporary file), remove later steps' (a run this one resumed
    before, e.g. past an unreadable checkpoint) and prune all but the newest `keep`."""
    folder = checkpoint_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save({**state, "step": step}, tmp)
    os.replace(tmp, path)
    found = checkpoints(out_dir)
    for old in [p for p in found if p > path] + [p for p in found if p <= path][:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents (tensors on the CPU), loaded with weights_only=True; CheckpointError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"resume={str(path)!r}: no such checkpoint file")
    try:
        with zipfile.ZipFile(path) as archive:  # torch.load checks no checksum: flipped tensor bytes load silently
            damaged = archive.testzip()
        if damaged is not None:
            raise CheckpointError(f"{path} is corrupt (its CRC-32 does not match in {damaged})")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:  # truncated or corrupt archive, or a pickle that asks for code: all unreadable
        first = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path} is unreadable ({type(err).__name__}: {first})") from err
    missing = [k for k in KEYS if k not in state] if isinstance(state, dict) else list(KEYS)
    if missing:
        raise CheckpointError(f"{path} is not a trainer checkpoint (it lacks {', '.join(missing)})")
    return state


def resume_state(resume: bool | str, out_dir: str | Path, out: TextIO | None = None
                 ) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from and its contents: None (fresh run), a named file, or the newest intact one
    in out_dir (`out`, default stderr, gets one line when newer ones are unreadable; the next save removes them)."""
    if resume is False:
        return None
    if isinstance(resume, str):
        return Path(resume), load_checkpoint(resume)
    found = checkpoints(out_dir)
    if not found:
        raise ValueError(f"resume=true but {checkpoint_dir(out_dir)} holds no checkpoint: "
                         "drop resume=true to start a new run")
    bad: list[CheckpointError] = []
    for path in reversed(found):
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            bad.append(err)
            continue
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            print(f"resume: {bad[0]}{more}; resuming from the newest intact checkpoint, {path.name}",
                  file=out or sys.stderr, flush=True)
        return path, state
    raise ValueError(f"resume=true but no checkpoint in {checkpoint_dir(out_dir)} is intact ({len(found)} tried; "
                     f"newest: {bad[0]}): drop resume=true to start a new run")


def export_checkpoint(checkpoint: str, out: str, force: bool = False, report: TextIO = sys.stdout) -> Path:
    """Write a nas.train checkpoint's architecture and weights as a transformers model folder `out`."""
    from nas.model.config import ArchConfig
    from nas.model.hf import write_hf
    from nas.model.transformer import TransformerLM

    state = load_checkpoint(checkpoint)
    arch = ArchConfig.from_dict(state["arch"])
    model = TransformerLM(arch)
    model.load_state_dict(state["model"])
    written = write_hf(arch, out, model=model, force=force)
    print(f"exported {checkpoint} (step {state['step']}) -> {written.out}\nfamily: {written.family.architecture} "
          f"(model_type {written.family.model_type}): {written.reason}\nload it: "
          f"transformers.AutoModelForCausalLM.from_pretrained({str(written.out)!r})", file=report, flush=True)
    return written.out
