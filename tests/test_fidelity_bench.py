"""The fidelity benchmark's pair statistic: only pairs the reference resolves count."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fidelity.py"


def _fidelity():
    spec = importlib.util.spec_from_file_location("fidelity_bench", SCRIPT)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


def test_resolved_pairs_ignore_differences_within_the_margin():
    agree = _fidelity().resolved_pair_agreement
    reference = [1.00, 1.01, 1.50, 2.00]  # 0 and 1 are a tie within a margin of 0.1
    assert agree([1, 2, 3, 4], reference, 0.1) == (5, 5)
    assert agree([2, 1, 3, 4], reference, 0.1) == (5, 5)  # the tie's order does not count
    assert agree([1, 2, 4, 3], reference, 0.1) == (4, 5)  # 2 and 3 swapped: resolved, so it counts
    assert agree([1, 1, 1, 1], reference, 0.1) == (0, 5)  # a proxy tie orders nothing
    assert agree([1, 2, 3, 4], reference, 1.5) == (0, 0)
