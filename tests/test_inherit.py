"""nas.evaluation.inherit: conversions from a dense parent, checked against the parent's own logits and the cost
model."""

from __future__ import annotations

import pytest
import torch

from nas.cost import param_counts
from nas.evaluation.inherit import GATE_EPS, convert, global_mass, parent_arch
from nas.model import ArchConfig, TransformerLM
from nas.model.sharing import sublayer_maps

SIZES = {"vocab_size": 64, "seq_len": 32, "n_layers": 4, "d_model": 32, "n_heads": 4, "ffn_mult": 2.0}


def _parent(**sizes) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(ArchConfig(**{**SIZES, **sizes})).eval()


def _ids(seq_len: int = 32) -> torch.Tensor:
    return torch.randint(0, SIZES["vocab_size"], (2, seq_len), generator=torch.Generator().manual_seed(1))


def _logits(model: TransformerLM, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids)


def test_a_conversion_that_changes_nothing_reproduces_the_parent() -> None:
    parent = _parent()
    ids = _ids()
    same = convert(parent, ArchConfig(**SIZES))
    assert torch.equal(_logits(same, ids), _logits(parent, ids))  # the same kernel: bit for bit
    full_window = convert(parent, ArchConfig(**SIZES, attention="local_global", window=32))
    torch.testing.assert_close(_logits(full_window, ids), _logits(parent, ids), rtol=1e-5, atol=1e-5)  # block kernel
    learned = _parent(positions="learned", tie_embeddings=False)
    assert torch.equal(_logits(convert(learned, learned.cfg), ids), _logits(learned, ids))


def _equalise_heads(parent: TransformerLM, groups: int, share_q: bool) -> None:
    """Make the parent's K and V (and Q) heads equal within each of `groups` groups of consecutive heads."""
    H, hd = parent.cfg.n_heads, parent.cfg.hd
    with torch.no_grad():
        for a in parent.attns:
            w = a.wqkv.weight.view(3, H // groups * groups, hd, -1)
            for part in (0, 1, 2) if share_q else (1, 2):
                heads = w[part].view(groups, H // groups, hd, -1)
                heads.copy_(heads[:, :1].expand_as(heads))


@pytest.mark.parametrize("kv_heads,share", [(2, "kv"), (1, "kv"), (2, "qkv"), (1, "qkv")])
def test_grouping_a_parent_with_equal_heads_is_exact(kv_heads: int, share: str) -> None:
    parent = _parent()
    _equalise_heads(parent, kv_heads, share_q=share == "qkv")
    ids = _ids()
    child = convert(parent, ArchConfig(**SIZES, kv_heads=kv_heads, group_share=share))
    torch.testing.assert_close(_logits(child, ids), _logits(parent, ids), rtol=1e-5, atol=1e-5)
    # a parent whose heads differ is changed by the pooling (the test above could not pass by accident)
    other = convert(_parent(), ArchConfig(**SIZES, kv_heads=kv_heads, group_share=share))
    assert not torch.allclose(_logits(other, ids), _logits(_parent(), ids), atol=1e-3)


def _tie_layers(parent: TransformerLM, cfg: ArchConfig) -> None:
    """Copy, in the parent, the first layer of each sharing group over the others (per shared sub-layer)."""
    attn_map, ffn_map = sublayer_maps(cfg)
    with torch.no_grad():
        for modules, mapping in ((parent.attns, attn_map), (parent.ffns, ffn_map)):
            first: dict[int, int] = {}
            for i, m in enumerate(mapping):
                if m in first and mapping != list(range(len(mapping))):
                    modules[i].load_state_dict(modules[first[m]].state_dict())
                first.setdefault(m, i)


@pytest.mark.parametrize("knobs", [{"sharing": "all"}, {"sharing": "cycle", "unique_layers": 2},
                                   {"sharing": "cycle_rev", "unique_layers": 2},
                                   {"sharing": "adjacent", "sharing_scope": "attention"},
                                   {"sharing": "sequence", "unique_layers": 2, "sharing_scope": "ffn"}])
def test_sharing_a_parent_with_equal_tied_layers_is_exact(knobs) -> None:
    cfg = ArchConfig(**SIZES, **knobs)
    parent = _parent()
    _tie_layers(parent, cfg)
    ids = _ids()
    torch.testing.assert_close(_logits(convert(parent, cfg), ids), _logits(parent, ids), rtol=1e-5, atol=1e-5)


def test_block_diagonal_sharing_keeps_the_pairs_diagonal_blocks() -> None:
    cfg = ArchConfig(**SIZES, sharing="ffn_block_diag", ffn_blocks=4)
    parent = _parent()
    k, d, hidden = 4, SIZES["d_model"], cfg.ffn_hidden
    with torch.no_grad():  # equal diagonal sub-blocks within each pair of layers, the rest left as trained
        for pair in (0, 2):
            for fc in ("fc1_weight", "fc2_weight"):
                a, b = getattr(parent.ffns[pair], fc), getattr(parent.ffns[pair + 1], fc)
                rows, cols = a.shape[0] // k, a.shape[1] // k
                for r in range(k):
                    diag = (slice(r * rows, (r + 1) * rows), slice(r * cols, (r + 1) * cols))
                    b[diag] = a[diag]
    ids = _ids()
    child = convert(parent, cfg)
    torch.testing.assert_close(_logits(child, ids), _logits(parent, ids), rtol=1e-5, atol=1e-5)
    for i in range(4):  # every layer assembles its parent's FFN weights
        assert torch.equal(child.ffns[i].weights()[0], parent.ffns[i].fc1_weight)
    assert hidden % k == 0 and d % k == 0


def test_precision_keeps_the_weights() -> None:
    parent = _parent()
    child = convert(parent, ArchConfig(**SIZES, precision={"attention": "bf16", "ffn": "fp8_e4m3"}))
    for (name, p), (_, c) in zip(parent.named_parameters(), child.named_parameters()):
        assert torch.equal(p, c), name
    ids = _ids()
    assert not torch.equal(_logits(child, ids), _logits(parent, ids))  # the formats do apply


def test_pass_through_gate_without_globals_is_the_window_to_within_its_epsilon() -> None:
    parent = _parent()
    ids = _ids()
    window = convert(parent, ArchConfig(**SIZES, attention="local_global", window=8))
    gated = convert(parent, ArchConfig(**SIZES, attention="local_global", window=8, gate="dynamic"))
    for a in gated.attns:
        torch.testing.assert_close(torch.sigmoid(a.g_proj.bias[0::2]), torch.full((4,), 1 - GATE_EPS))
    # only the local gate's 1e-3 shortfall separates the two
    gap = (_logits(gated, ids) - _logits(window, ids)).abs().max()
    assert 0 < gap < 20 * GATE_EPS * _logits(window, ids).abs().max()
    default = convert(parent, gated.cfg, gate_init="default")
    assert (_logits(default, ids) - _logits(window, ids)).abs().max() > 10 * gap


def test_pass_through_gate_with_globals_follows_the_parents_attention_mass() -> None:
    parent = _parent()
    ids = _ids()
    cfg = ArchConfig(**SIZES, attention="local_global", window=4, global_tokens=2, gate="dynamic")
    mass = global_mass(parent, ids, 4, 2)
    assert mass.shape == (4, 4) and bool(((mass > 0) & (mass < 1)).all())
    child = convert(parent, cfg, calibration=ids)
    for layer, a in enumerate(child.attns):
        gates = torch.sigmoid(a.g_proj.bias).view(4, 2)
        torch.testing.assert_close(gates[:, 1], mass[layer].clamp(GATE_EPS, 1 - GATE_EPS))
        torch.testing.assert_close(gates.sum(1), torch.ones(4))
    # closer to the parent's logits than the gates' default init (0.5 each, plus noise)
    def err(m):
        return (_logits(m, ids) - _logits(parent, ids)).abs().mean()

    assert err(child) < err(convert(parent, cfg, gate_init="default"))


@pytest.mark.parametrize("knobs", [{},
                                   {"attention": "local_global", "window": 8, "global_tokens": 2, "gate": "dynamic"},
                                   {"kv_heads": 2}, {"kv_heads": 1, "group_share": "qkv"},
                                   {"sharing": "cycle_rev", "unique_layers": 2}, {"sharing": "adjacent"},
                                   {"sharing": "all", "sharing_scope": "ffn"}, {"sharing": "ffn_block_diag"}])
def test_converted_parameter_counts_equal_the_cost_model(knobs) -> None:
    cfg = ArchConfig(**SIZES, **knobs)
    child = convert(_parent(), cfg)
    counts = param_counts(cfg)
    assert child.param_counts() == {"total": counts["total"], "unique": counts["unique"]}
    assert sum(p.numel() for p in child.parameters()) == counts["unique"]


def test_bad_parents_are_refused() -> None:
    with pytest.raises(ValueError, match="dense"):
        convert(TransformerLM(ArchConfig(**SIZES, kv_heads=2)), ArchConfig(**SIZES))
    with pytest.raises(ValueError, match="seq_len"):
        convert(_parent(), ArchConfig(**{**SIZES, "seq_len": 64}))
    with pytest.raises(ValueError, match="gate_init"):
        convert(_parent(), ArchConfig(**SIZES), gate_init="zero")
    assert parent_arch(ArchConfig(**SIZES, kv_heads=2, sharing="all")).to_dict() == ArchConfig(**SIZES).to_dict()
