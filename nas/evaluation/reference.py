"""The reference of a proxy: a model of clearly higher fidelity that proxy rankings are checked against.

One definition, used by `benchmarks/fidelity.py` and `nas.export verify=true`: 4x the proxy's depth, 4x its
context and 8x its training tokens, at the same width, heads and recipe (warm-up scaled with the steps; the
full context from the first step). A
configuration carries to it by the rule of nas/knobs.py (a window keeps its share of the context).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, is_dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.evaluation.proxy import ProxySpec

DEPTH_FACTOR = 4
CONTEXT_FACTOR = 4
TOKEN_FACTOR = 8


def reference_proxy(proxy: ProxySpec, budget_tokens: int | None = None) -> ProxySpec:
    """The reference of `proxy` trained for `budget_tokens` (None = the proxy's own budget), its budget set."""
    budget = proxy.budget_tokens if budget_tokens is None else budget_tokens
    seq_len = CONTEXT_FACTOR * proxy.seq_len
    tokens = TOKEN_FACTOR * budget
    steps = tokens // (proxy.batch_size * seq_len)
    proxy_steps = max(1, budget // proxy.tokens_per_step)
    return replace(proxy, name=f"{proxy.name}-reference", n_layers=DEPTH_FACTOR * proxy.n_layers, seq_len=seq_len,
                   budget_tokens=tokens, warmup_steps=round(proxy.warmup_steps * steps / proxy_steps),
                   min_context=None)  # the reference trains at its full context throughout


def describe(proxy: ProxySpec | Mapping[str, Any]) -> str:
    """One line: the sizes and budget of a proxy or reference (a ProxySpec, or one stored as a dict)."""
    p: dict[str, Any] = asdict(proxy) if is_dataclass(proxy) else dict(proxy)
    growth = f" (rungs grow the context from {p['min_context']})" if p.get("min_context") else ""
    tokens = p.get("budget_tokens")
    return (f"{p.get('name', '?')}: {p.get('n_layers', '?')} layers x {p.get('d_model', '?')} wide, "
            f"{p.get('n_heads', '?')} heads, {p.get('seq_len', '?')} positions{growth}, "
            f"{f'{tokens:,}' if isinstance(tokens, int) else '?'} tokens")
