"""Layer sharing: which unique layer each position runs, and FFN weights with shared diagonal sub-blocks."""

from __future__ import annotations

import torch
from torch import nn

from nas.model.config import ArchConfig


def layer_map(pattern: str, n_layers: int, n_unique: int) -> list[int]:
    """Unique-layer index for each of the n_layers positions under a sharing pattern."""
    L, M = n_layers, n_unique
    if pattern in ("none", "ffn_block_diag"):
        return list(range(L))
    if pattern == "all":
        return [0] * L
    if pattern == "sequence":  # [0,0,1,1,..]: each unique layer runs L/M times in a row
        return [i // (L // M) for i in range(L)]
    if pattern == "cycle":  # [0,1,..,M-1,0,1,..]
        return [i % M for i in range(L)]
    if pattern == "cycle_rev":  # Takase & Kiyono 2021: cycle, then the last M layers in reverse
        return [i % M if i < L - M else M - 1 - (i - (L - M)) for i in range(L)]
    if pattern == "adjacent":  # MobileLLM immediate block-wise repeat: each block runs twice in a row
        return [i // 2 for i in range(L)]
    raise ValueError(f"sharing={pattern!r} is not a known pattern")


def sublayer_maps(cfg: ArchConfig) -> tuple[list[int], list[int]]:
    """(attention map, ffn map): the pattern's map for the shared scope(s), identity for the rest."""
    shared = layer_map(cfg.sharing, cfg.n_layers, cfg.n_unique)
    own = list(range(cfg.n_layers))
    attn = shared if cfg.sharing_scope in ("attention", "both") else own
    ffn = shared if cfg.sharing_scope in ("ffn", "both") else own
    return attn, ffn


class BlockDiagSharedWeight(nn.Module):
    """A (out, in) weight cut into k x k sub-blocks: the k diagonal blocks come from a (possibly shared)
    tensor, the k*(k-1) off-diagonal blocks are this module's own."""

    order: torch.Tensor  # a buffer: the index of each (r, c) block in cat([diagonal, off_diagonal])

    def __init__(self, diagonal: nn.Parameter, out_features: int, in_features: int, k: int) -> None:
        super().__init__()
        ob, ib = out_features // k, in_features // k
        if diagonal.shape != (k, ob, ib):
            raise ValueError(f"diagonal blocks have shape {tuple(diagonal.shape)}, expected {(k, ob, ib)}")
        self.k, self.out_features, self.in_features = k, out_features, in_features
        self.diagonal = diagonal
        self.off_diagonal = nn.Parameter(torch.empty(k * (k - 1), ob, ib))
        # order[r * k + c] = index into cat([diagonal, off_diagonal]) of block (r, c)
        order, off = [], k
        for r in range(k):
            for c in range(k):
                order.append(r if r == c else off)
                off += r != c
        self.register_buffer("order", torch.tensor(order), persistent=False)

    def forward(self) -> torch.Tensor:
        """The assembled (out, in) weight."""
        k, ob, ib = self.k, self.out_features // self.k, self.in_features // self.k
        blocks = torch.cat([self.diagonal, self.off_diagonal])[self.order]  # (k*k, ob, ib)
        return blocks.view(k, k, ob, ib).permute(0, 2, 1, 3).reshape(self.out_features, self.in_features)
