"""The one device resolver: `auto` picks CUDA when present, else the CPU; names are checked."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """auto -> cuda when available, else cpu; cpu and cuda[:N] as named (ValueError when unusable here)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" or device.startswith("cuda") and torch.cuda.is_available():
        return torch.device(device)
    raise ValueError(f"device={device!r} is invalid here: expected auto, cpu"
                     f"{' or cuda[:N]' if torch.cuda.is_available() else ' (no CUDA device is available)'}")
