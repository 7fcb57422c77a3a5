"""The one rule by which a configuration's knobs carry between model sizes (proxy <-> reference <-> target).

Knobs are what a search varies; sizes are what a proxy, a reference or a target fixes. A knob that is a share
of a size keeps its share, rounded to the nearest valid value (ties go to the larger):

- window: a fraction of the context. A window of W at S positions becomes round(W * S' / S) at S'. The
  long-range probes (MQAR distances, late-position loss) spread over the whole context, so a window that
  sees the same share of the context sees the same share of the dependencies at any length.
- global_tokens: an absolute count. They are attention sinks / summary slots at the start of the sequence,
  whose use does not grow with the context; a count that does not fit below S' is refused.
- kv_heads: a fraction of n_heads, as the nearest divisor of n_heads'.
- unique_layers (sequence, cycle, cycle_rev): a fraction of n_layers (a divisor of n_layers' where the
  pattern needs one).
- ffn_blocks: an absolute count, as the nearest common divisor of d_model' and the FFN width.
- everything else (attention kind, gate, group_share, sharing pattern and scope, precision): as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from nas.model.config import ArchConfig, PrecisionConfig

SIZE_FIELDS = ("vocab_size", "seq_len", "n_layers", "d_model", "n_heads", "head_dim", "ffn_mult", "tie_embeddings",
               "positions", "ffn", "intermediate_size", "qk_norm", "post_norms", "rope_theta")
KNOB_FIELDS = ("attention", "backend", "window", "global_tokens", "block_size", "gate", "gate_threshold",
               "kv_heads", "group_share", "sharing", "unique_layers", "sharing_scope", "ffn_blocks", "precision")
_DIVISOR_SHARING = ("sequence", "cycle_rev")  # patterns that need M | L
_FRACTIONAL_SHARING = ("sequence", "cycle", "cycle_rev")  # patterns whose M is a free knob


def nearest_divisor(n: int, x: float) -> int:
    """The divisor of n closest to x (ties: the larger)."""
    return min((k for k in range(1, n + 1) if n % k == 0), key=lambda k: (abs(k - x), -k))


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


def carry(source: ArchConfig | Mapping[str, Any], sizes: Mapping[str, Any], *, what: str = "the proxy") -> ArchConfig:
    """The knobs of `source` at `sizes` (a dict of SIZE_FIELDS), by the rule of this module.

    A source without sizes (a plain knob dict, as a search space samples it) is in the units of `sizes`
    already: nothing is rescaled, and a window longer than the context is refused rather than clipped.
    """
    src = source.to_dict() if isinstance(source, ArchConfig) else dict(source)
    knobs = knobs_of(src)
    sizes = {k: sizes[k] for k in SIZE_FIELDS if k in sizes}
    if "seq_len" in src:  # a sized source: rescale its shares
        knobs = _rescaled(knobs, ArchConfig.from_dict(src).to_dict(), sizes)
    seq_len = sizes["seq_len"]
    if knobs.get("window", 0) > seq_len:
        raise ValueError(f"window={knobs['window']} exceeds {what}'s seq_len={seq_len}: a window can see at most "
                         f"the whole context; search windows <= {seq_len} or use a longer proxy.seq_len")
    if knobs.get("global_tokens", 0) >= seq_len:
        raise ValueError(f"global_tokens={knobs['global_tokens']} does not fit below {what}'s seq_len={seq_len}")
    try:
        return ArchConfig.from_dict({**sizes, **knobs})
    except ValueError as err:
        raise ValueError(f"the knobs do not fit {what} ({err})") from err


def _rescaled(knobs: dict[str, Any], src: Mapping[str, Any], sizes: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs of an architecture of sizes `src` at `sizes`: each share kept, rounded to the nearest valid value."""
    knobs = dict(knobs)
    if "window" in knobs:
        knobs["window"] = max(1, min(sizes["seq_len"], round(knobs["window"] * sizes["seq_len"] / src["seq_len"])))
    if knobs.get("kv_heads") is not None:
        knobs["kv_heads"] = nearest_divisor(sizes["n_heads"], knobs["kv_heads"] * sizes["n_heads"] / src["n_heads"])
    sharing, layers = knobs.get("sharing", "none"), sizes["n_layers"]
    if sharing not in _FRACTIONAL_SHARING:
        knobs["unique_layers"] = None  # the pattern fixes M
    elif knobs.get("unique_layers") is not None:  # None: the pattern's default, L // 2, is a share already
        m = max(1.0, knobs["unique_layers"] * layers / src["n_layers"])
        knobs["unique_layers"] = nearest_divisor(layers, m) if sharing in _DIVISOR_SHARING else min(layers, round(m))
    if sharing == "ffn_block_diag" and "ffn_blocks" in knobs:
        knobs["ffn_blocks"] = nearest_divisor(_ffn_block_room(sizes), knobs["ffn_blocks"])
    return knobs


def _ffn_block_room(sizes: Mapping[str, Any]) -> int:
    """What ffn_blocks must divide at `sizes`: d_model, and a stated FFN width (the ffn_mult rule rounds to fit)."""
    width = sizes.get("intermediate_size")
    return sizes["d_model"] if width is None else math.gcd(sizes["d_model"], width)


def sizes_of(arch: ArchConfig) -> dict[str, Any]:
    """The size fields of an architecture."""
    return {k: getattr(arch, k) for k in SIZE_FIELDS}
