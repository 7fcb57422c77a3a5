"""Attention kernels: dense causal, block-local sliding window + global tokens, gated branches, flex_attention.

Shapes: q is (B, H, S, D); k and v are (B, Hkv, S, D) with Hkv dividing H. Query head h reads kv head
h // (H // Hkv) (repeat_interleave semantics, as in GQA). Key j is visible to query i iff j <= i and
(i - window < j or j < global_tokens).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, reduce
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]

MAX_DEFAULT_BLOCK = 128  # measured best on CPU at W=256 (see default_block_size)


# ---------------------------------------------------------------------------------------------------------------
# mask_mods (flex_attention convention: (b, h, q_idx, kv_idx) -> bool)


def sliding_window_mask_mod(window: int) -> MaskMod:
    """Causal sliding window: key kv visible to query q iff q - window < kv <= q."""

    def sliding_window(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (kv_idx <= q_idx) & (q_idx - window < kv_idx)

    sliding_window.__name__ = f"sliding_window_{window}"
    return sliding_window


def global_tokens_mask_mod(global_tokens: int) -> MaskMod:
    """Causal global tokens: key kv visible to query q iff kv < global_tokens and kv <= q."""

    def global_tokens_(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (kv_idx <= q_idx) & (kv_idx < global_tokens)

    global_tokens_.__name__ = f"global_tokens_{global_tokens}"
    return global_tokens_


def local_global_mask_mod(window: int, global_tokens: int) -> MaskMod:
    """Union of the causal sliding window and the causal global tokens."""

    def local_global(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return (kv_idx <= q_idx) & ((q_idx - window < kv_idx) | (kv_idx < global_tokens))

    local_global.__name__ = f"local_global_{window}_{global_tokens}"
    return local_global


# ---------------------------------------------------------------------------------------------------------------
# pair counts (the cost model uses these)


def _check_sizes(seq_len: int, window: int, global_tokens: int, block_size: int = 0) -> None:
    if seq_len < 1 or window < 1 or global_tokens < 0 or block_size < 0:
        raise ValueError(
            f"attention sizes seq_len={seq_len}, window={window}, global_tokens={global_tokens}, "
            f"block_size={block_size} are invalid: expected seq_len >= 1, window >= 1, global_tokens >= 0, "
            "block_size >= 0 (0 = auto)"
        )


def default_block_size(window: int, seq_len: int) -> int:
    """Query block of the block-local kernel: the window rounded up to a power of two, at most 128, at most S."""
    # A query block of size b reads a key span of b * (1 + ceil((W - 1) / b)) keys, about W + b per query:
    # a smaller block computes fewer masked scores but runs smaller, less efficient matmuls. On the 2-core CPU
    # (S=8192, W=256, G=16, D=64, forward+backward) b=128 was fastest; b=64 and b=256 were 8-15% slower.
    window = min(window, seq_len)
    return min(1 << (window - 1).bit_length(), MAX_DEFAULT_BLOCK, 1 << (seq_len - 1).bit_length())


def _layout(seq_len: int, window: int, global_tokens: int, block_size: int) -> tuple[int, int, int, int, int]:
    """(window, block, n_blocks, span_blocks, kernel_globals) of the block kernel for these sizes.

    A window at least as long as the sequence being run sees every earlier key, so it is the same mask as a
    window of seq_len (exact, not a clip: a configuration's window is bounded by its context in ArchConfig).
    """
    window = min(window, seq_len)
    block = block_size or default_block_size(window, seq_len)
    n_blocks = -(-seq_len // block)
    span = -(-(window - 1) // block)  # key blocks before the query's own block that the window reaches
    kernel_globals = max(0, min(global_tokens, seq_len - window))  # global keys some query sees outside its window
    return window, block, n_blocks, span, kernel_globals


def attention_pairs(seq_len: int, window: int, global_tokens: int) -> int:
    """Exact number of visible (query, key) pairs."""
    _check_sizes(seq_len, window, global_tokens)
    w = min(window, seq_len)
    local = w * (w + 1) // 2 + (seq_len - w) * w
    outside = seq_len - w  # global key j adds the queries i >= j + w
    n = min(global_tokens, outside)
    return local + n * outside - n * (n - 1) // 2


def computed_pairs(seq_len: int, window: int, global_tokens: int, block_size: int = 0) -> int:
    """Number of score entries the block kernel computes, masked ones and padding included."""
    _check_sizes(seq_len, window, global_tokens, block_size)
    _, block, n_blocks, span, kernel_globals = _layout(seq_len, window, global_tokens, block_size)
    return n_blocks * block * ((span + 1) * block + kernel_globals)


# ---------------------------------------------------------------------------------------------------------------
# dense


def dense_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal softmax attention over the whole prefix (PyTorch SDPA)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


# ---------------------------------------------------------------------------------------------------------------
# block-local sliding window + global tokens
#
# Queries are split into n_blocks blocks of `block` rows; the keys of block n are the `span` key blocks before
# it, its own block, then the n_glob global keys: Lk = (span + 1) * block + n_glob keys, masked by a cached
# additive bias. Blocks are processed in chunks of consecutive blocks: each chunk gathers its queries
# (B * Hkv * count, group * block, D) - the heads of a kv group stacked along the rows, so K/V are never
# repeated - and its key spans (B * Hkv * count, Lk, D), then runs batched matmuls and one softmax. The
# forward saves no probabilities; the backward recomputes them chunk by chunk (as flash attention does). So
# memory beyond the inputs and outputs is one chunk of scores, which the allocator reuses instead of faulting
# in fresh pages for an S x Lk buffer on every call.
#
# On CPU with several intra-op threads, the chunks are spread over as many worker threads, each running its ops
# single-threaded. Run as multi-threaded ops, every op of a chunk was an OpenMP parallel region that waited at a
# barrier for its slowest thread, and on a busy CPU a descheduled thread stalled every region (S=8192 forward at
# 0.17x dense on a quiet 2-core machine, 1.6x with two busy processes). Workers take chunks from a queue, so a
# descheduled worker delays only its own chunk (0.2x under the same load: benchmarks/results/attention_cpu.txt).

CHUNK_SCORES_CPU = 1 << 20  # score entries per chunk on CPU (4 MiB fp32); 2^19..2^21 ran equally fast on 2 cores
CHUNK_SCORES_CUDA = 1 << 24
CHUNK_SCORES_MIN_CPU = 1 << 19  # smallest chunk a CPU worker takes (2^17..2^20 measured alike at S >= 2048)
CHUNKS_PER_WORKER = 4  # at least this many chunks per CPU worker where the blocks allow it (load balance)


@lru_cache(maxsize=4)
def _worker_pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """Threads that run chunks with single-threaded ops (one pool per process: a forked child makes its own)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="nas-attention", initializer=torch.set_num_threads,
                              initargs=(1,))


def _for_chunks(lay: "_BlockLayout", device: torch.device, body: Callable[[int, int, int], None]) -> None:
    """body(index, first, last) for every chunk of lay: in order on CUDA or one thread, else on the CPU worker
    pool (so body must not write where another chunk writes, except as its index allows)."""
    chunks = lay.chunks()
    threads = torch.get_num_threads()
    workers = min(threads, len(chunks)) if device.type == "cpu" else 1
    if workers <= 1:
        for index, (first, last) in enumerate(chunks):
            body(index, first, last)
        return

    inference = torch.is_inference_mode_enabled()

    def task(index: int) -> None:
        # grad and inference mode are per thread: the kernel's ops are never recorded, and they may write into
        # the caller's inference tensors
        with torch.inference_mode(inference), torch.no_grad():
            body(index, *chunks[index])

    try:
        for future in [_worker_pool(workers, os.getpid()).submit(task, i) for i in range(len(chunks))]:
            future.result()
    finally:
        torch.set_num_threads(threads)  # the workers' set_num_threads(1) also sets the default of new threads


@lru_cache(maxsize=8)
def _block_bias(
    seq_len: int, window: int, global_tokens: int, block: int, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Additive (0 / -inf) bias of shape (n_blocks, 1, block, Lk) for the block kernel."""
    _, _, n_blocks, span, kernel_globals = _layout(seq_len, window, global_tokens, block)
    i = torch.arange(n_blocks * block, device=device).view(n_blocks, block, 1)  # query position
    c = torch.arange((span + 1) * block, device=device)
    j = (torch.arange(n_blocks, device=device).view(n_blocks, 1, 1) - span) * block + c  # key position in span
    local = (j >= 0) & (j <= i) & (j > i - window)
    glob = torch.arange(kernel_globals, device=device) <= i - window  # global keys outside the window
    visible = torch.cat([local, glob.expand(n_blocks, block, kernel_globals)], dim=-1)
    bias = torch.zeros(visible.shape, device=device, dtype=dtype).masked_fill_(~visible, float("-inf"))
    return bias.view(n_blocks, 1, block, -1)


def _check_heads(q: Tensor, k: Tensor, v: Tensor) -> int:
    """Query heads per kv head, after checking q (B, H, S, D) and k, v (B, Hkv, S, D)."""
    same = q.dim() == k.dim() == v.dim() == 4 and q.shape[::2] == k.shape[::2] and k.shape[:3] == v.shape[:3]
    if not same or q.shape[1] % k.shape[1] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"attention shapes q={tuple(q.shape)}, k={tuple(k.shape)}, v={tuple(v.shape)} are invalid: expected "
            "q (B, H, S, D) and k, v (B, Hkv, S, D) with Hkv dividing H"
        )
    return q.shape[1] // k.shape[1]


class _BlockLayout:
    """Sizes of one block-kernel call and the gathers between (B, H, S, D) tensors and chunks of blocks."""

    def __init__(self, q: Tensor, k: Tensor, window: int, global_tokens: int, block_size: int) -> None:
        self.bsz, self.n_heads, self.seq_len, _ = q.shape
        self.n_kv = k.shape[1]
        self.group = self.n_heads // self.n_kv
        self.window, self.block, self.n_blocks, self.span, self.n_glob = _layout(
            self.seq_len, window, global_tokens, block_size
        )
        self.padded = self.n_blocks * self.block
        self.rows = self.group * self.block
        self.keys = (self.span + 1) * self.block + self.n_glob
        target = CHUNK_SCORES_CUDA if q.is_cuda else CHUNK_SCORES_CPU
        block_scores = self.bsz * self.n_kv * self.rows * self.keys  # score entries of one block
        self.chunk = max(1, target // block_scores)  # blocks per chunk
        if not q.is_cuda and torch.get_num_threads() > 1:
            balanced = -(-self.n_blocks // (CHUNKS_PER_WORKER * torch.get_num_threads()))
            smallest = -(-CHUNK_SCORES_MIN_CPU // block_scores)
            self.chunk = min(self.chunk, max(balanced, smallest))

    def chunks(self) -> list[tuple[int, int]]:
        """(first block, end block) of each chunk."""
        return [(n, min(n + self.chunk, self.n_blocks)) for n in range(0, self.n_blocks, self.chunk)]

    def pad(self, x: Tensor) -> Tensor:
        """(B, H, S, ...) -> (B, H, n_blocks * block, ...), zero rows appended."""
        if self.padded == self.seq_len:
            return x
        return F.pad(x, (0, 0) * (x.dim() - 3) + (0, self.padded - self.seq_len))

    def _rows_view(self, x: Tensor, first: int, last: int) -> Tensor:
        """View of x (B, H, n_blocks * block, *rest) as (B, Hkv, count, group, block, *rest)."""
        x = x.view(self.bsz, self.n_kv, self.group, self.n_blocks, self.block, *x.shape[3:])
        return x[:, :, :, first:last].transpose(2, 3)

    def gather_rows(self, x: Tensor, first: int, last: int, scale: float = 1.0) -> Tensor:
        """scale * the rows of blocks first..last-1 of x (B, H, n_blocks * block, D), as (B * Hkv * count, rows, D)."""
        src = self._rows_view(x, first, last)
        out = x.new_empty(src.shape)
        if scale == 1.0:
            out.copy_(src)
        else:
            torch.mul(src, scale, out=out)
        return out.view(-1, self.rows, *x.shape[3:])

    def scatter_rows(self, x: Tensor, chunk: Tensor, first: int, last: int, scale: float = 1.0) -> None:
        """Write scale * chunk (B * Hkv * count, group * block, D) into blocks first..last-1 of x."""
        dst = self._rows_view(x, first, last)
        if scale == 1.0:
            dst.copy_(chunk.view(dst.shape))
        else:
            torch.mul(chunk.view(dst.shape), scale, out=dst)

    def _span_bounds(self, first: int, last: int) -> tuple[int, int]:
        return (first - self.span) * self.block, last * self.block

    def key_spans(self, x: Tensor, first: int, last: int) -> Tensor:
        """Keys of blocks first..last-1: (B * Hkv * count, Lk, D), the span blocks before each, its own, globals."""
        lo, hi = self._span_bounds(first, last)
        win = x[:, :, max(lo, 0) : min(hi, self.seq_len)]
        if lo < 0 or hi > self.seq_len:
            win = F.pad(win, (0, 0, max(-lo, 0), max(hi - self.seq_len, 0)))
        count, dim = last - first, x.shape[-1]
        win = win.reshape(self.bsz, self.n_kv, count + self.span, self.block, dim)
        parts = [win[:, :, s : s + count] for s in range(self.span + 1)]
        if self.n_glob:
            parts.append(x[:, :, None, : self.n_glob].expand(-1, -1, count, -1, -1))
        return torch.cat(parts, dim=3).view(-1, self.keys, dim)

    def add_key_spans_(self, dx: Tensor, grad: Tensor, first: int, last: int) -> Tensor | None:
        """Adjoint of key_spans: add the gradient of every windowed copy of a key into dx (B, Hkv, n_blocks *
        block, D); return the global keys' gradient (B, Hkv, n_glob, D), None without global keys."""
        count, dim = last - first, dx.shape[-1]
        grad = grad.view(self.bsz, self.n_kv, count, self.keys, dim)
        blocks = dx.view(self.bsz, self.n_kv, self.n_blocks, self.block, dim)
        for s in range(self.span + 1):
            start, end = first - self.span + s, last - self.span + s  # key blocks of part s of the chunk
            if end <= 0:  # the whole part is zero padding in front of the sequence (a chunk ending before `span`)
                continue
            skip = max(0, -start)  # zero padding in front of the sequence
            part = grad[:, :, skip:, s * self.block : (s + 1) * self.block]
            blocks[:, :, start + skip : end] += part
        return grad[:, :, :, self.keys - self.n_glob :].sum(2) if self.n_glob else None

    def key_classes(self) -> int:
        """m such that chunks i and i + m never write the same key block (the span reaches m - 1 chunks back)."""
        return 1 + -(-self.span // self.chunk)

    def softmax(self, scores: Tensor, bias: Tensor, first: int, last: int) -> Tensor:
        """Probabilities of the scores of blocks first..last-1; the scores are overwritten."""
        view = scores.view(self.bsz * self.n_kv, last - first, self.group, self.block, self.keys)
        view.add_(bias[first:last])
        return torch.softmax(scores, -1)


class _BlockAttention(torch.autograd.Function):
    """Block-local attention with a flash-style backward that recomputes probabilities per chunk."""

    @staticmethod
    def forward(ctx, q, k, v, window, global_tokens, block_size):  # noqa: ANN001, ANN205
        lay = _BlockLayout(q, k, window, global_tokens, block_size)
        scale = 1.0 / math.sqrt(q.shape[-1])
        bias = _block_bias(lay.seq_len, lay.window, lay.n_glob, lay.block, q.device, q.dtype)
        qp = lay.pad(q)
        out = q.new_empty(lay.bsz, lay.n_heads, lay.padded, v.shape[-1])

        def chunk(_: int, first: int, last: int) -> None:
            scores = torch.bmm(lay.gather_rows(qp, first, last, scale), lay.key_spans(k, first, last).transpose(1, 2))
            probs = lay.softmax(scores, bias, first, last)
            lay.scatter_rows(out, torch.bmm(probs, lay.key_spans(v, first, last)), first, last)

        _for_chunks(lay, q.device, chunk)
        ctx.save_for_backward(qp, k, v, out)
        ctx.lay, ctx.scale = lay, scale
        return out[:, :, : lay.seq_len]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        qp, k, v, out = ctx.saved_tensors
        lay, scale = ctx.lay, ctx.scale
        bias = _block_bias(lay.seq_len, lay.window, lay.n_glob, lay.block, qp.device, qp.dtype)
        dout = lay.pad(grad_out)
        delta = (dout * out).sum(-1, keepdim=True)  # (B, H, n_blocks * block, 1)
        dq = torch.empty_like(qp)
        # Neighbouring chunks share key blocks and every chunk reads the global keys: chunk i adds its windowed
        # key gradients into sum i % key_classes (whose chunks never overlap) and keeps its global ones apart;
        # both are then added in a fixed order, so the result does not depend on which worker ran what.
        sums = [tuple(t.new_zeros(lay.bsz, lay.n_kv, lay.padded, t.shape[-1]) for t in (k, v))
                for _ in range(lay.key_classes())]
        globs: dict[int, tuple[Tensor | None, Tensor | None]] = {}

        def chunk(index: int, first: int, last: int) -> None:
            dk, dv = sums[index % len(sums)]
            qc, doc = lay.gather_rows(qp, first, last, scale), lay.gather_rows(dout, first, last)
            keys, values = lay.key_spans(k, first, last), lay.key_spans(v, first, last)
            probs = lay.softmax(torch.bmm(qc, keys.transpose(1, 2)), bias, first, last)
            dscores = torch.bmm(doc, values.transpose(1, 2)).sub_(lay.gather_rows(delta, first, last)).mul_(probs)
            lay.scatter_rows(dq, torch.bmm(dscores, keys), first, last, scale)
            globs[index] = (lay.add_key_spans_(dk, torch.bmm(dscores.transpose(1, 2), qc), first, last),
                            lay.add_key_spans_(dv, torch.bmm(probs.transpose(1, 2), doc), first, last))

        _for_chunks(lay, qp.device, chunk)
        dk, dv = (reduce(torch.add, parts) for parts in zip(*sums))
        if lay.n_glob:
            for grad_k, grad_v in (globs[i] for i in sorted(globs)):
                dk[:, :, : lay.n_glob] += grad_k
                dv[:, :, : lay.n_glob] += grad_v
        crop = slice(0, lay.seq_len)
        return dq[:, :, crop], dk[:, :, crop], dv[:, :, crop], None, None, None


def local_global_attention(
    q: Tensor, k: Tensor, v: Tensor, window: int, global_tokens: int, block_size: int = 0
) -> Tensor:
    """One softmax over the causal window and the global tokens, computed block-locally in O(S * (W + B + G)).

    fp16/bf16 inputs are computed in fp32 and the result cast back.
    """
    _check_heads(q, k, v)
    _check_sizes(q.shape[2], window, global_tokens, block_size)
    work = torch.promote_types(q.dtype, torch.float32)
    out = _BlockAttention.apply(q.to(work), k.to(work), v.to(work), window, global_tokens, block_size)
    return out.to(q.dtype)


def local_window_attention(q: Tensor, k: Tensor, v: Tensor, window: int, block_size: int = 0) -> Tensor:
    """Causal sliding-window attention only (the local branch of the gate)."""
    return local_global_attention(q, k, v, window, 0, block_size)


def global_token_attention(q: Tensor, k: Tensor, v: Tensor, global_tokens: int) -> Tensor:
    """Causal attention to the first G keys only (the global branch of the gate), in O(S * G); zero if G = 0."""
    group = _check_heads(q, k, v)
    bsz, n_heads, seq_len, dim = q.shape
    n_kv = k.shape[1]
    _check_sizes(seq_len, 1, global_tokens)
    n_glob = min(global_tokens, seq_len)
    if n_glob == 0:
        return q.new_zeros(bsz, n_heads, seq_len, v.shape[-1])
    qg = (q * (1.0 / math.sqrt(dim))).reshape(bsz, n_kv, group * seq_len, dim)
    scores = torch.matmul(qg, k[:, :, :n_glob].transpose(-1, -2)).view(bsz, n_kv, group, seq_len, n_glob)
    # only the first n_glob queries see fewer than n_glob keys: an upper-triangular -inf bias on those rows
    tri = torch.ones(n_glob, n_glob, dtype=torch.bool, device=q.device).triu_(1)
    bias = torch.zeros(n_glob, n_glob, dtype=scores.dtype, device=q.device).masked_fill_(tri, float("-inf"))
    scores[..., :n_glob, :] += bias
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(q.dtype)
    probs = probs.view(bsz, n_kv, group * seq_len, n_glob)
    return torch.matmul(probs, v[:, :, :n_glob]).view(bsz, n_heads, seq_len, v.shape[-1])


def _gated_branch(branch: Callable[[Tensor, Tensor, Tensor], Tensor], q: Tensor, k: Tensor, v: Tensor,
                  gate: Tensor, threshold: float) -> Tensor | None:
    """gate * branch(q, k, v), computed only for the heads with some gate >= threshold; None if there are none."""
    if threshold > 0:
        gate = torch.where(gate >= threshold, gate, torch.zeros_like(gate))
        heads = (gate > 0).any(2).any(0).nonzero().flatten()
        if heads.numel() == 0:
            return None
        if heads.numel() < q.shape[1]:
            kv = heads // (q.shape[1] // k.shape[1])
            out = q.new_zeros(*q.shape[:3], v.shape[-1])
            out[:, heads] = branch(q[:, heads], k[:, kv], v[:, kv])
            return gate[..., None] * out
    return gate[..., None] * branch(q, k, v)


def gated_local_global_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int,
    global_tokens: int,
    gate_local: Tensor,
    gate_global: Tensor,
    threshold: float = 0.0,
    block_size: int = 0,
) -> Tensor:
    """gate_local * local window branch + gate_global * global token branch, gates (B, H, S) in [0, 1].

    With threshold > 0, gates below it are cut to 0, and a branch is computed only for the heads where some
    gate (over batch and positions) survives; a branch with no surviving head is skipped entirely.
    """
    _check_heads(q, k, v)
    if gate_local.shape != q.shape[:3] or gate_global.shape != q.shape[:3]:
        raise ValueError(
            f"attention gate shapes {tuple(gate_local.shape)}, {tuple(gate_global.shape)} are invalid: "
            f"expected (B, H, S) = {tuple(q.shape[:3])}"
        )
    local = _gated_branch(lambda a, b, c: local_window_attention(a, b, c, window, block_size),
                          q, k, v, gate_local, threshold)
    glob = None
    if global_tokens > 0:
        glob = _gated_branch(lambda a, b, c: global_token_attention(a, b, c, global_tokens),
                             q, k, v, gate_global, threshold)
    if local is None:
        return q.new_zeros(*q.shape[:3], v.shape[-1]) if glob is None else glob
    return local if glob is None else local + glob


# ---------------------------------------------------------------------------------------------------------------
# flex_attention


def flex_available() -> bool:
    """True when torch.nn.attention.flex_attention can be imported."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=32)
def _flex_block_mask(seq_len: int, window: int, global_tokens: int, device: torch.device):  # noqa: ANN202
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(
        local_global_mask_mod(window, global_tokens), None, None, seq_len, seq_len, device=device
    )


@lru_cache(maxsize=1)
def _compiled_flex() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_local_global_attention(
    q: Tensor, k: Tensor, v: Tensor, window: int, global_tokens: int, compiled: bool = False
) -> Tensor:
    """Local + global attention through flex_attention with a cached block mask (compiled or eager)."""
    from torch.nn.attention.flex_attention import flex_attention

    _check_heads(q, k, v)
    seq_len = q.shape[2]
    _check_sizes(seq_len, window, global_tokens)
    block_mask = _flex_block_mask(seq_len, window, global_tokens, q.device)
    # torch's decorators leave flex_attention typed as a bare `function`
    fn = _compiled_flex() if compiled else cast(Callable[..., Tensor], flex_attention)
    return fn(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1])
