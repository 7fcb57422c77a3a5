"""Attention kernels against SDPA with a dense boolean mask, flex_attention, FlopCounterMode and closed forms."""

from __future__ import annotations

import os
import threading

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from nas.model import attention as A

HEADS = [(4, 4), (4, 2), (4, 1)]


def dense_mask(seq_len: int, window: int, global_tokens: int) -> torch.Tensor:
    """The (S, S) visibility mask: key j visible to query i iff j <= i and (i - W < j or j < G)."""
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    return (j <= i) & ((i - window < j) | (j < global_tokens))


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


def make_qkv(seq_len: int, heads: int, kv_heads: int, dim: int = 8, batch: int = 2, dtype=torch.float32):
    q = torch.randn(batch, heads, seq_len, dim, dtype=dtype, requires_grad=True)
    k = torch.randn(batch, kv_heads, seq_len, dim, dtype=dtype, requires_grad=True)
    v = torch.randn(batch, kv_heads, seq_len, dim, dtype=dtype, requires_grad=True)
    return q, k, v


def forward_and_grads(fn, q, k, v, grad_out):
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), grad_out))


@pytest.mark.parametrize("heads", HEADS, ids=lambda h: f"H{h[0]}kv{h[1]}")
@pytest.mark.parametrize("global_tokens", [0, 1, 4])
@pytest.mark.parametrize("window", [1, 3, 16, 64])
@pytest.mark.parametrize("seq_len", [1, 7, 33, 100])
def test_local_global_matches_masked_sdpa(seq_len, window, global_tokens, heads):
    q, k, v = make_qkv(seq_len, *heads)
    grad_out = torch.randn(q.shape)
    mask = dense_mask(seq_len, window, global_tokens)
    expected = forward_and_grads(lambda a, b, c: sdpa(a, b, c, mask), q, k, v, grad_out)
    for block_size in (0, 1, 8, 32):
        got = forward_and_grads(
            lambda a, b, c, block_size=block_size: A.local_global_attention(a, b, c, window, global_tokens, block_size),
            q, k, v, grad_out,
        )
        for name, g, e in zip(("out", "dq", "dk", "dv"), got, expected):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5, msg=f"{name} block_size={block_size}")


@pytest.mark.parametrize("global_tokens", [0, 4])
@pytest.mark.parametrize("window", [50, 51, 500])
def test_window_covering_sequence_equals_causal_sdpa(window, global_tokens):
    q, k, v = make_qkv(50, 4, 2)
    grad_out = torch.randn(q.shape)
    expected = forward_and_grads(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True, enable_gqa=True), q, k, v, grad_out
    )
    got = forward_and_grads(lambda a, b, c: A.local_global_attention(a, b, c, window, global_tokens), q, k, v, grad_out)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(A.dense_attention(q, k, v), expected[0], atol=1e-6, rtol=1e-6)


def test_branches_match_masked_sdpa():
    seq_len, window, global_tokens = 40, 6, 5
    q, k, v = make_qkv(seq_len, 4, 2)
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    torch.testing.assert_close(
        A.local_window_attention(q, k, v, window), sdpa(q, k, v, dense_mask(seq_len, window, 0)), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        A.global_token_attention(q, k, v, global_tokens), sdpa(q, k, v, (j <= i) & (j < global_tokens)),
        atol=1e-5, rtol=1e-5,
    )
    assert torch.count_nonzero(A.global_token_attention(q, k, v, 0)) == 0


@pytest.mark.skipif(not A.flex_available(), reason="flex_attention is not in this torch")
@pytest.mark.parametrize("seq_len,window,global_tokens,heads", [(100, 16, 4, (4, 2)), (130, 7, 0, (4, 4)),
                                                                  (130, 33, 9, (4, 1))])
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_matches_eager_flex_attention(seq_len, window, global_tokens, heads):
    # flex_attention has no backward on CPU: forward only
    q, k, v = (t.detach() for t in make_qkv(seq_len, *heads, batch=1))
    expected = A.flex_local_global_attention(q, k, v, window, global_tokens)
    got = A.local_global_attention(q, k, v, window, global_tokens)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not os.environ.get("NAS_COMPILE_TESTS"), reason="compiling flex_attention on CPU takes ~30 s "
                    "(set NAS_COMPILE_TESTS=1 to run)")
def test_matches_compiled_flex_attention():
    q, k, v = (t.detach() for t in make_qkv(256, 4, 2, dim=16, batch=1))
    expected = A.flex_local_global_attention(q, k, v, 32, 4, compiled=True)
    torch.testing.assert_close(A.local_global_attention(q, k, v, 32, 4), expected, atol=1e-5, rtol=1e-5)


def test_mask_mods_agree_with_dense_mask():
    seq_len, window, global_tokens = 24, 5, 3
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    zero = torch.tensor(0)
    assert torch.equal(A.local_global_mask_mod(window, global_tokens)(zero, zero, i, j),
                       dense_mask(seq_len, window, global_tokens))
    assert torch.equal(A.sliding_window_mask_mod(window)(zero, zero, i, j), dense_mask(seq_len, window, 0))
    assert torch.equal(A.global_tokens_mask_mod(global_tokens)(zero, zero, i, j), (j <= i) & (j < global_tokens))


@pytest.mark.parametrize(
    "fn",
    [
        lambda q, k, v: A.local_global_attention(q, k, v, 8, 4),
        lambda q, k, v: A.local_window_attention(q, k, v, 8),
        lambda q, k, v: A.global_token_attention(q, k, v, 4),
        lambda q, k, v: A.gated_local_global_attention(
            q, k, v, 8, 4, torch.full(q.shape[:3], 0.7), torch.full(q.shape[:3], 0.4)
        ),
    ],
    ids=["local_global", "local_window", "global_token", "gated"],
)
def test_causal_later_tokens_do_not_change_earlier_outputs(fn):
    seq_len = 70
    q, k, v = (t.detach() for t in make_qkv(seq_len, 4, 2))
    before = fn(q, k, v)
    for t in (0, 3, 37, 69):
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        for x in (q2, k2, v2):
            x[:, :, t:] += torch.randn_like(x[:, :, t:])
        after = fn(q2, k2, v2)
        assert torch.equal(after[:, :, :t], before[:, :, :t]), f"position {t} leaked into earlier outputs"
        assert not torch.equal(after[:, :, t:], before[:, :, t:])


def test_saturated_gates_reproduce_one_branch_exactly():
    q, k, v = (t.detach() for t in make_qkv(30, 4, 2))
    ones, zeros = torch.ones(q.shape[:3]), torch.zeros(q.shape[:3])
    local = A.local_window_attention(q, k, v, 5)
    glob = A.global_token_attention(q, k, v, 3)
    for threshold in (0.0, 0.5):
        assert torch.equal(A.gated_local_global_attention(q, k, v, 5, 3, ones, zeros, threshold), local)
        assert torch.equal(A.gated_local_global_attention(q, k, v, 5, 3, zeros, ones, threshold), glob)
    assert torch.equal(A.gated_local_global_attention(q, k, v, 5, 0, ones, ones), local)  # G = 0: no global branch
    gate_local, gate_global = torch.rand(q.shape[:3]), torch.rand(q.shape[:3])
    mixed = A.gated_local_global_attention(q, k, v, 5, 3, gate_local, gate_global)
    torch.testing.assert_close(mixed, gate_local[..., None] * local + gate_global[..., None] * glob)


def test_threshold_cuts_gates_and_skips_branches(monkeypatch):
    q, k, v = (t.detach() for t in make_qkv(30, 4, 2))
    local = A.local_window_attention(q, k, v, 5)
    glob = A.global_token_attention(q, k, v, 3)
    gate_local = torch.rand(q.shape[:3]) * 0.5 + 0.5
    gate_global = torch.full(q.shape[:3], 0.2)
    gate_global[:, 3, ::2] = 0.9  # only head 3 has global gates above the threshold

    calls = []

    def spy(q_, k_, v_, global_tokens):
        calls.append(q_.shape[1])
        return glob[:, 3:]

    monkeypatch.setattr(A, "global_token_attention", spy)
    out = A.gated_local_global_attention(q, k, v, 5, 3, gate_local, gate_global, threshold=0.5)
    assert calls == [1]  # the global branch ran for head 3 only
    cut_global = torch.where(gate_global >= 0.5, gate_global, torch.zeros_like(gate_global))
    torch.testing.assert_close(out, gate_local[..., None] * local + cut_global[..., None] * glob)

    gate_global[:, 3] = 0.2
    out = A.gated_local_global_attention(q, k, v, 5, 3, gate_local, gate_global, threshold=0.5)
    assert calls == [1]  # no gate above the threshold: the global branch is not computed at all
    torch.testing.assert_close(out, gate_local[..., None] * local)
    off = A.gated_local_global_attention(q, k, v, 5, 3, torch.zeros_like(gate_local), gate_global, threshold=0.5)
    assert torch.count_nonzero(off) == 0


@pytest.mark.parametrize("seq_len", [1, 2, 5, 64, 100, 257])
@pytest.mark.parametrize("window", [1, 3, 16, 64, 300])
@pytest.mark.parametrize("global_tokens", [0, 1, 4, 200])
def test_attention_pairs_counts_the_dense_mask(seq_len, window, global_tokens):
    pairs = A.attention_pairs(seq_len, window, global_tokens)
    assert pairs == int(dense_mask(seq_len, window, global_tokens).sum())
    for block_size in (0, 1, 8, 128):
        computed = A.computed_pairs(seq_len, window, global_tokens, block_size)
        block = block_size or A.default_block_size(window, seq_len)
        assert pairs <= computed <= (seq_len + block) * (min(window, seq_len) + 2 * block + global_tokens)


@pytest.mark.parametrize("seq_len,window,global_tokens,heads,block_size",
                         [(100, 16, 4, (4, 2), 0), (2048, 64, 16, (2, 1), 0), (77, 5, 3, (2, 2), 8)])
def test_computed_pairs_equals_counted_matmul_flops(seq_len, window, global_tokens, heads, block_size):
    q, k, v = (t.detach() for t in make_qkv(seq_len, *heads, batch=1))
    with FlopCounterMode(display=False) as counter:
        A.local_global_attention(q, k, v, window, global_tokens, block_size)
    dim = q.shape[-1]
    # forward: scores = Q K^T and out = P V, each 2 * D flops per computed score entry of each query head
    expected = 4 * dim * heads[0] * A.computed_pairs(seq_len, window, global_tokens, block_size)
    assert counter.get_total_flops() == expected


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_sequence_squared_tensor():
    seq_len, window, global_tokens = 4096, 64, 4
    q, k, v = make_qkv(seq_len, 2, 1, batch=1)
    A._block_bias.cache_clear()
    with _LargestTensor() as mode:
        A.local_global_attention(q, k, v, window, global_tokens).sum().backward()
    assert q.grad is not None and k.grad is not None
    assert mode.largest < seq_len * seq_len // 8, mode.largest


def test_other_float_dtypes():
    q, k, v = (t.detach() for t in make_qkv(40, 4, 2, dtype=torch.float64))
    mask = dense_mask(40, 6, 3)
    expected = sdpa(q, k, v, mask)
    torch.testing.assert_close(A.local_global_attention(q, k, v, 6, 3), expected, atol=1e-12, rtol=1e-12)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    out = A.local_global_attention(qb, kb, vb, 6, 3)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, atol=3e-2, rtol=3e-2)


def test_non_contiguous_inputs():
    # the model's q, k, v are (B, S, H, D) projections transposed to (B, H, S, D)
    q, k, v = (t.detach() for t in make_qkv(37, 4, 2))
    qt, kt, vt = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    assert not qt.is_contiguous()
    gates = torch.rand(q.shape[:3]), torch.rand(q.shape[:3])
    for fn in (
        lambda a, b, c: A.local_global_attention(a, b, c, 5, 3, 8),
        lambda a, b, c: A.global_token_attention(a, b, c, 3),
        lambda a, b, c: A.gated_local_global_attention(a, b, c, 5, 3, *gates, threshold=0.1),
    ):
        torch.testing.assert_close(fn(qt, kt, vt), fn(q, k, v), atol=1e-6, rtol=1e-6)


def test_default_block_size():
    assert A.default_block_size(256, 8192) == 128
    assert A.default_block_size(48, 8192) == 64
    assert A.default_block_size(256, 20) == 32
    assert A.default_block_size(1, 1) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda q, k, v: A.local_global_attention(q, k, v, 0, 2),
        lambda q, k, v: A.local_global_attention(q, k, v, 4, -1),
        lambda q, k, v: A.local_global_attention(q, k[:, :, :5], v[:, :, :5], 4, 1),
        lambda q, k, v: A.local_global_attention(q, torch.cat([k, k, k], 1), torch.cat([v, v, v], 1), 4, 1),
        lambda q, k, v: A.gated_local_global_attention(q, k, v, 4, 1, torch.ones(2, 4), torch.ones(2, 4)),
    ],
)
def test_invalid_arguments_raise_value_error(call):
    q, k, v = (t.detach() for t in make_qkv(10, 4, 2))
    with pytest.raises(ValueError, match="attention"):
        call(q, k, v)


@pytest.mark.parametrize("seq_len,window,global_tokens,batch,block_size", [
    (64, 16, 4, 2, 8), (70, 17, 3, 1, 8), (50, 30, 0, 2, 4), (33, 9, 5, 3, 0), (100, 64, 2, 1, 16), (41, 41, 4, 2, 8),
])
@pytest.mark.parametrize("chunk_scores", [1, 700, 3000])
def test_small_chunks_match_masked_sdpa(monkeypatch, seq_len, window, global_tokens, batch, block_size, chunk_scores):
    # regression: a chunk ending before block `span` wrapped a negative slice end in the backward (add_key_spans_);
    # tiny chunk budgets put chunk boundaries everywhere, including inside the leading zero-padded span
    monkeypatch.setattr(A, "CHUNK_SCORES_CPU", chunk_scores)
    for heads in HEADS:
        q, k, v = make_qkv(seq_len, *heads, batch=batch)
        grad_out = torch.randn(q.shape)
        mask = dense_mask(seq_len, window, global_tokens)
        expected = forward_and_grads(lambda a, b, c, mask=mask: sdpa(a, b, c, mask), q, k, v, grad_out)
        got = forward_and_grads(
            lambda a, b, c: A.local_global_attention(a, b, c, window, global_tokens, block_size), q, k, v, grad_out
        )
        for name, g, e in zip(("out", "dq", "dk", "dv"), got, expected):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5, msg=f"{name} heads={heads}")


@pytest.mark.parametrize("seq_len,window,global_tokens,batch,block_size", [
    (64, 16, 4, 2, 8), (70, 17, 3, 1, 8), (100, 64, 2, 1, 16), (41, 41, 4, 2, 8), (257, 96, 5, 1, 16),
])
def test_cpu_worker_threads_match_masked_sdpa_deterministically(monkeypatch, seq_len, window, global_tokens, batch,
                                                                 block_size):
    # with 2 intra-op threads the chunks run on the worker pool; one-block chunks make the window reach several
    # chunks back (key_classes > 2) and give every worker chunks to race on
    monkeypatch.setattr(A, "CHUNK_SCORES_CPU", 1)
    monkeypatch.setattr(A, "CHUNK_SCORES_MIN_CPU", 1)
    ran_on: set[str] = set()
    gather = A._BlockLayout.gather_rows
    monkeypatch.setattr(A._BlockLayout, "gather_rows",
                        lambda *a, **kw: ran_on.add(threading.current_thread().name) or gather(*a, **kw))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for heads in HEADS:
            q, k, v = make_qkv(seq_len, *heads, batch=batch)
            grad_out = torch.randn(q.shape)
            mask = dense_mask(seq_len, window, global_tokens)
            expected = forward_and_grads(lambda a, b, c, mask=mask: sdpa(a, b, c, mask), q, k, v, grad_out)
            fn = lambda a, b, c: A.local_global_attention(a, b, c, window, global_tokens, block_size)  # noqa: E731
            got, again = (forward_and_grads(fn, q, k, v, grad_out) for _ in range(2))
            for name, g, e, g2 in zip(("out", "dq", "dk", "dv"), got, expected, again):
                torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5, msg=f"{name} heads={heads}")
                assert torch.equal(g, g2), f"{name} heads={heads} differs between two identical calls"
            with torch.inference_mode():  # the workers write into the caller's inference tensors
                assert torch.equal(fn(q, k, v), got[0])
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert any(name.startswith("nas-attention") for name in ran_on), ran_on


def test_large_sequence_two_span_blocks_backward():
    # the reported case: S=1024, W=256 (span 2 blocks of 128), chunks of one block on CPU budgets
    torch.manual_seed(0)
    q, k, v = make_qkv(1024, 4, 4, dim=32)
    mask = dense_mask(1024, 256, 4)
    grad_out = torch.randn(q.shape)
    expected = forward_and_grads(lambda a, b, c: sdpa(a, b, c, mask), q, k, v, grad_out)
    got = forward_and_grads(lambda a, b, c: A.local_global_attention(a, b, c, 256, 4), q, k, v, grad_out)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("heads", [(4, 2), (4, 1), (6, 2)], ids=lambda h: f"H{h[0]}kv{h[1]}")
def test_gqa_transposed_global_and_gated_match_masked_sdpa(heads):
    # regression: GQA (kv heads < q heads) with q = x.view(B, S, H, hd).transpose(1, 2) as the model passes them
    seq_len, window, global_tokens = 24, 5, 3
    q, k, v = (t.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for t in make_qkv(24, *heads))
    assert not q.is_contiguous()
    i, j = torch.arange(seq_len)[:, None], torch.arange(seq_len)[None, :]
    glob_mask, local_mask = (j <= i) & (j < global_tokens), dense_mask(seq_len, window, 0)
    gl, gg = torch.rand(q.shape[:3]), torch.rand(q.shape[:3])
    grad_out = torch.randn(q.shape)
    cases = [
        (lambda a, b, c: A.global_token_attention(a, b, c, global_tokens),
         lambda a, b, c: sdpa(a, b, c, glob_mask)),
        (lambda a, b, c: A.gated_local_global_attention(a, b, c, window, global_tokens, gl, gg),
         lambda a, b, c: gl[..., None] * sdpa(a, b, c, local_mask) + gg[..., None] * sdpa(a, b, c, glob_mask)),
    ]
    for fn, oracle in cases:
        got = forward_and_grads(fn, q, k, v, grad_out)
        expected = forward_and_grads(oracle, q, k, v, grad_out)
        for name, g, e in zip(("out", "dq", "dk", "dv"), got, expected):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5, msg=name)


def test_gqa_local_global_model_backward_matches_a_dense_masked_reference(monkeypatch):
    """The whole gated GQA model: loss and every parameter gradient equal those of the same model whose gated
    attention is rebuilt from SDPA with explicit dense masks (repeat-interleaved K/V)."""
    from nas.model import ArchConfig, TransformerLM

    cfg = ArchConfig(seq_len=24, n_layers=2, d_model=32, n_heads=4, kv_heads=2, attention="local_global",
                     window=5, global_tokens=3, gate="dynamic")
    x, y = torch.randint(0, 256, (2, 24)), torch.randint(0, 256, (2, 24))

    def grads() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = TransformerLM(cfg)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    loss, blocked = grads()

    def reference(q, k, v, window, global_tokens, gate_local, gate_global, threshold=0.0, block_size=0):
        S = q.shape[2]
        i, j = torch.arange(S)[:, None], torch.arange(S)[None, :]
        k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
        local = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask(S, window, 0))
        glob = F.scaled_dot_product_attention(q, k, v, attn_mask=(j <= i) & (j < global_tokens))
        return gate_local[..., None] * local + gate_global[..., None] * glob

    monkeypatch.setattr(A, "gated_local_global_attention", reference)
    ref_loss, dense = grads()
    torch.testing.assert_close(loss, ref_loss)
    assert set(blocked) == set(dense) and all(g is not None for g in blocked.values())
    for name, g in blocked.items():  # fp32: the same sums in another order
        torch.testing.assert_close(g, dense[name], rtol=1e-4, atol=1e-6, msg=name)
