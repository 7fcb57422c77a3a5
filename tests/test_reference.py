"""nas.evaluation.reference: the reference is 4x deeper, 4x longer in context and trained on 8x the tokens."""

from __future__ import annotations

from dataclasses import replace

from nas.evaluation.proxy import load_proxy, proxy_arch
from nas.evaluation.reference import describe, reference_proxy


def test_the_reference_is_clearly_higher_fidelity_than_its_proxy() -> None:
    tiny = replace(load_proxy("tiny"), min_context=16)
    ref = reference_proxy(tiny)
    assert (ref.n_layers, ref.seq_len, ref.budget_tokens) == (8, 256, 8 * 1_048_576)
    assert (ref.d_model, ref.n_heads, ref.batch_size, ref.lr) == (tiny.d_model, tiny.n_heads, tiny.batch_size, tiny.lr)
    assert ref.min_context is None  # the full context from the first step
    steps, proxy_steps = ref.budget_tokens // ref.tokens_per_step, tiny.budget_tokens // tiny.tokens_per_step
    assert steps == 2 * proxy_steps and ref.warmup_steps == 2 * tiny.warmup_steps
    assert reference_proxy(tiny, budget_tokens=1000).budget_tokens == 8000
    # a proxy trial carries to the reference by the knob rule: a window keeps its share of the context
    arch = proxy_arch(proxy_arch({"attention": "local_global", "window": 8}, tiny), ref)
    assert (arch.window, arch.n_layers, arch.seq_len) == (32, 8, 256)
    assert "8 layers" in describe(ref) and "256 positions" in describe(ref)
