"""The one rule by which a configuration's knobs carry between model sizes (proxy <-> reference <-> target).

Knobs are what a search varies; sizes are what a proxy, a reference or a target fixes. A knob that is a share
of a size keeps its share, rounded to the nearest valid value (ties go to the larger):

- window: a fraction of the context. A window of W at S positions becomes round(W * S' / S) at S'. The
  other rule on offer (`carry(..., rules={"window": "context_tokens"})`): the same count of tokens, clipped to
  the destination's context (a published 512-token window is 512 positions of a 1024-position proxy, and the
  whole context of a 64-position one). Neither keeps the long-range probes' coverage fixed: MQAR's distances are
  log-uniform from 4 to S - 2 (a window of 1/8 of the context leaves 0.71, 0.58, 0.49 of the queries beyond it
  at 64, 128, 256 positions), and late-position text depends on tokens. Issue #22's context ladder
  (benchmarks/context_ladder.py, results/context_ladder_cpu.txt: the tiny proxy dense and windowed at 64, 128
  and 256 positions, 2 seeds) could not tell the two apart: the spreads of a window's cost within the
  configurations each rule calls equal (0.046 share, 0.045 count) are well inside the noise (0.112); at that
  proxy's 1M tokens a window even improves late-position text. The share stays the default, undecided.
- global_tokens: an absolute count. They are attention sinks / summary slots at the start of the sequence,
  whose use does not grow with the context; a count that does not fit below S' is refused.
- kv_heads: a fraction of n_heads, as the nearest divisor of n_heads'.
- unique_layers (sequence, cycle, cycle_rev): a fraction of n_layers (a divisor of n_layers' where the
  pattern needs one).
- global_every (one global layer every k, the last of each group): a share of the layers, 1/k, whatever the
  depth: k is kept (the count of global layers, L // k, scales with depth; each stays last in its group), clipped
  to the destination's n_layers so a layout with a global layer keeps one (k=6 at 4 layers: 1 of 4).
- global_layers (an explicit placement): by relative depth. Destination layer j takes the kind of the source
  layer at its depth, floor((j + 0.5) * L / L'): going deeper every source layer becomes the band of L'/L layers
  at its depth (the count scales with depth, the placement keeps its relative position; 4 -> 16 layers: [3] ->
  [12, 13, 14, 15]). Going shallower this samples the layers; a placement that loses every global layer gets
  back the one at the depth of its last, and one that becomes all global keeps the layer at the depth of its
  first local layer local.
- ffn_blocks: an absolute count, as the nearest common divisor of d_model' and the FFN width.
- everything else (attention kind, gate, group_share, sharing pattern and scope, precision): as is.

Each knob names its rule on its ArchConfig field (nas/model/config.py, `Knob.scale`); RULES below is the rule
book. A knob that does not apply to a configuration (a dense model's window) is None and is not carried.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from nas.model.config import DIVISOR_SHARING, KNOB_FIELDS, KNOBS, SIZE_FIELDS, ArchConfig, PrecisionConfig, ScaleRule

__all__ = ["KNOB_FIELDS", "SIZE_FIELDS", "carry", "knobs_of", "nearest_divisor", "sizes_of"]


def nearest_divisor(n: int, x: float) -> int:
    """The divisor of n closest to x (ties: the larger)."""
    return min((k for k in range(1, n + 1) if n % k == 0), key=lambda k: (abs(k - x), -k))


def _unique_layers(m: int, src: Mapping[str, Any], dst: Mapping[str, Any], knobs: Mapping[str, Any]) -> int:
    layers = dst["n_layers"]
    share = max(1.0, m * layers / src["n_layers"])
    return nearest_divisor(layers, share) if knobs.get("sharing") in DIVISOR_SHARING else min(layers, round(share))


def _global_layers(layers: list[int], src: Mapping[str, Any], dst: Mapping[str, Any], knobs: Mapping[str, Any]
                   ) -> list[int]:
    n, m = src["n_layers"], dst["n_layers"]
    at_depth = [math.floor((j + 0.5) * n / m) for j in range(m)]  # the source layer at each destination layer's depth
    out = {j for j in range(m) if at_depth[j] in layers}
    if not out:
        out = {min(m - 1, math.floor((max(layers) + 0.5) * m / n))}
    if len(out) == m and m > 1:
        first_local = next(i for i in range(n) if i not in layers)
        out.discard(min(m - 1, math.floor((first_local + 0.5) * m / n)))
    return sorted(out)


# The scaling rules by name (ArchConfig's fields declare which one each knob follows): value, source sizes,
# destination sizes, the other knobs -> the value at the destination
RULES: dict[ScaleRule, Callable[[Any, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], Any]] = {
    "as_is": lambda v, src, dst, knobs: v,
    "count": lambda v, src, dst, knobs: v,
    "context_share": lambda v, src, dst, knobs: max(1, min(dst["seq_len"], round(v * dst["seq_len"] / src["seq_len"]))),
    "context_tokens": lambda v, src, dst, knobs: min(v, dst["seq_len"]),
    "head_share": lambda v, src, dst, knobs: nearest_divisor(dst["n_heads"], v * dst["n_heads"] / src["n_heads"]),
    "layer_share": _unique_layers,
    "layer_period": lambda v, src, dst, knobs: min(v, dst["n_layers"]),
    "layer_positions": _global_layers,
    "width_divisor": lambda v, src, dst, knobs: nearest_divisor(_ffn_block_room(dst), v),
}


def _ffn_block_room(sizes: Mapping[str, Any]) -> int:
    """What ffn_blocks must divide at `sizes`: d_model, and a stated FFN width (the ffn_mult rule rounds to fit)."""
    width = sizes.get("intermediate_size")
    return sizes["d_model"] if width is None else math.gcd(sizes["d_model"], width)


def knobs_of(source: ArchConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The knob fields of an ArchConfig or a knob dict (a dict may hold only knobs, or knobs and sizes)."""
    data = source.to_dict() if isinstance(source, ArchConfig) else dict(source)
    unknown = sorted(set(data) - set(KNOB_FIELDS) - set(SIZE_FIELDS))
    if unknown:
        raise ValueError(f"arch.{unknown[0]} is not a known field: valid knobs are {', '.join(KNOB_FIELDS)}")
    knobs = {k: data[k] for k in KNOB_FIELDS if k in data}
    if isinstance(knobs.get("precision"), PrecisionConfig):
        knobs["precision"] = asdict(knobs["precision"])
    return knobs


def carry(source: ArchConfig | Mapping[str, Any], sizes: Mapping[str, Any], *, what: str = "the proxy",
          rules: Mapping[str, ScaleRule] | None = None) -> ArchConfig:
    """The knobs of `source` at `sizes` (a dict of SIZE_FIELDS), by the rule each knob declares (or, for the knobs
    `rules` names, the rule it names: e.g. {"window": "context_tokens"}).

    A source without sizes (a plain knob dict, as a search space samples it) is in the units of `sizes`
    already: nothing is rescaled, and a knob outside its declared bounds (a window longer than the context)
    is refused rather than clipped.
    """
    src = source.to_dict() if isinstance(source, ArchConfig) else dict(source)
    knobs = knobs_of(src)
    sizes = {k: sizes[k] for k in SIZE_FIELDS if k in sizes}
    rules = dict(rules or {})
    unknown = sorted(k for k, rule in rules.items() if k not in KNOBS or rule not in RULES)
    if unknown:
        raise ValueError(f"rules.{unknown[0]}={rules[unknown[0]]!r} is invalid: expected a knob "
                         f"({', '.join(KNOB_FIELDS)}) and a rule ({', '.join(RULES)})")
    if "seq_len" in src:  # a sized source: rescale its shares (its knobs normalised: those that do not apply None)
        src_arch = source if isinstance(source, ArchConfig) else ArchConfig.from_dict(src)
        knobs = {k: v if v is None else RULES[rules.get(k, KNOBS[k].scale)](v, src_arch.to_dict(), sizes, knobs)
                 for k, v in knobs_of(src_arch).items()}
    try:
        return ArchConfig.from_dict({**sizes, **knobs})
    except ValueError as err:
        raise ValueError(f"the knobs do not fit {what} ({err})") from err


def sizes_of(arch: ArchConfig) -> dict[str, Any]:
    """The size fields of an architecture."""
    return {k: getattr(arch, k) for k in SIZE_FIELDS}
