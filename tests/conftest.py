"""Test-wide settings: one torch thread, deterministic seeds, subprocesses import this checkout's `nas`."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
REPO = str(Path(__file__).resolve().parents[1])
# a CLI test's subprocess must run this tree's code, also when the installed (editable) package is another checkout
os.environ["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
