"""KV cache for incremental decoding: per layer position, the rotated keys and values a next query may read.

A global layer (dense attention) keeps every position. A local layer keeps its first `sinks` positions (the global
tokens) and a ring of the last `window` positions: query t reads keys j <= t with t - window < j or
j < sinks, exactly the keys the full forward's mask lets through. The cached slots are unordered (softmax
attention over a set of keys does not depend on their order), so a step attends to every filled slot
with no mask; the dynamic gate's two branches select the window's and the sinks' slots by position.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nas.model.config import ArchConfig


class LayerKVCache:
    """K and V (B, n_kv, slots, head_dim) of one layer position; `length` positions written so far."""

    def __init__(self, batch: int, kv_heads: int, head_dim: int, max_len: int, window: int | None, sinks: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.window, self.sinks, self.length = window, sinks if window is not None else 0, 0
        slots = max_len if window is None else min(max_len, self.sinks + window)
        self.k = torch.zeros(batch, kv_heads, slots, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)

    @property
    def slots(self) -> int:
        """Positions this cache holds at most."""
        return self.k.shape[2]

    def _slot(self, pos: Tensor) -> Tensor:
        if self.window is None:
            return pos
        return torch.where(pos < self.sinks, pos, self.sinks + (pos - self.sinks) % self.window)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write K, V (B, n_kv, n, hd) of the next n positions; return the filled (B, n_kv, slots, hd) views."""
        n, start = k.shape[2], self.length
        end = start + n
        if self.window is None and end > self.slots:
            raise ValueError(f"KV cache of {self.slots} positions cannot take positions up to {end}: "
                             "raise max_len (at most ArchConfig.seq_len)")
        pos = torch.arange(start, end, device=k.device)
        keep = pos < self.sinks if self.window is not None else torch.ones_like(pos, dtype=torch.bool)
        if self.window is not None:  # of the new positions, the sinks and the last `window` ones survive
            keep |= pos > end - 1 - self.window
        if n == 1:  # the decode step: one position, one slot
            slot = int(self._slot(pos)[0])
            self.k[:, :, slot] = k[:, :, 0]
            self.v[:, :, slot] = v[:, :, 0]
        else:
            slots = self._slot(pos[keep])
            self.k.index_copy_(2, slots, k[:, :, keep])
            self.v.index_copy_(2, slots, v[:, :, keep])
        self.length = end
        filled = min(end, self.slots)
        return self.k[:, :, :filled], self.v[:, :, :filled]


    def positions(self) -> Tensor:
        """The position each filled slot holds (sinks in place, the ring's slots the last `window` positions)."""
        filled = torch.arange(min(self.length, self.slots), device=self.k.device)
        if self.window is None:
            return filled
        t = self.length - 1
        return torch.where(filled < self.sinks, filled, t - (t - filled) % self.window)


class KVCache:
    """One LayerKVCache per layer position of a TransformerLM, for `batch` sequences of up to `max_len` tokens.

    `dtype`: the attention core's (fp32 on a CPU; on CUDA bf16, or fp16 for precision.attention=fp16).
    """

    def __init__(self, cfg: ArchConfig, batch: int, max_len: int | None = None, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        self.max_len = cfg.seq_len if max_len is None else max_len
        if not 1 <= self.max_len <= cfg.seq_len:
            raise ValueError(f"KVCache max_len={max_len!r} is invalid: expected 1..ArchConfig.seq_len={cfg.seq_len}")
        device = torch.device(device)
        self.rope: tuple[Tensor, Tensor] | None = None  # the model's rotary tables up to max_len, set on first use
        self.layers = [LayerKVCache(batch, cfg.n_kv, cfg.hd, self.max_len, layer.window, layer.global_tokens, dtype,
                                    device)  # a global layer (window None) keeps every position
                       for layer in map(cfg.layer_attention, range(cfg.n_layers))]

    @property
    def length(self) -> int:
        """Positions written so far (the next token's position)."""
        return self.layers[0].length

    def nbytes(self) -> int:
        """Bytes this cache allocates (K and V of every layer)."""
        return sum(layer.k.numel() * layer.k.element_size() * 2 for layer in self.layers)
