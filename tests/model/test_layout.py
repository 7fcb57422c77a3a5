"""Per-layer attention layouts: a mixed model against a reference built layer by layer with SDPA and its own mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.model import ArchConfig, TransformerLM
from nas.model.config import ConfigError, LayerAttention
from nas.model.transformer import apply_rope, rope_tables

TINY = dict(seq_len=24, n_layers=4, d_model=32, n_heads=4, ffn_mult=2.0)


def tiny(**changes) -> ArchConfig:
    return ArchConfig.from_dict({**TINY, **changes})


def _visible(S: int, is_global: bool, window: int, global_tokens: int) -> torch.Tensor:
    """(S, S) boolean mask written out: causal, and for a local layer inside the window or on a global token."""
    i, j = torch.arange(S)[:, None], torch.arange(S)[None, :]
    return (j <= i) if is_global else (j <= i) & ((i - window < j) | (j < global_tokens))


def _reference(model: TransformerLM, idx: torch.Tensor, global_layers: list[int]) -> torch.Tensor:
    """The model's forward rebuilt layer by layer: each layer's attention is SDPA with the mask its kind implies."""
    cfg = model.cfg
    B, S = idx.shape
    H, KV, hd = cfg.n_heads, cfg.n_kv, cfg.hd
    x = model.tok_emb(idx)
    cos, sin = rope_tables(S, hd, idx.device, cfg.rope_theta)
    for i, (a, f) in enumerate(zip(model.attn_map, model.ffn_map)):
        attn = model.attns[a]
        h = attn.norm(x)
        wq, wk, wv = attn.wqkv.weight.split([H * hd, KV * hd, KV * hd])
        q, k, v = ((h @ w.T).view(B, S, -1, hd).transpose(1, 2) for w in (wq, wk, wv))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        mask = _visible(S, cfg.attention == "dense" or i in global_layers, cfg.window or S, cfg.global_tokens or 0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=H != KV)
        x = x + y.transpose(1, 2).reshape(B, S, H * hd) @ attn.wo.weight.T
        x = x + model.ffns[f](x)
    return model.norm(x) @ model.tok_emb.weight.T


@pytest.mark.parametrize("changes, global_layers", [
    (dict(attention="local_global", window=5, global_every=2), [1, 3]),  # gpt-oss: alternating, local first
    (dict(attention="local_global", window=4, global_tokens=2, global_layers=[0, 2]), [0, 2]),
    (dict(attention="local_global", window=6, global_every=3, kv_heads=2), [2]),
    (dict(attention="local_global", window=5, global_tokens=3, global_every=4, sharing="all"), [3]),  # one module
    (dict(attention="local_global", window=5, global_layers="1,2"), [1, 2]),  # a search space's sample
    (dict(attention="local_global", window=7), []),  # Mistral: every layer local
    (dict(), [0, 1, 2, 3]),  # dense
])
def test_mixed_layout_equals_a_reference_built_layer_by_layer(changes, global_layers):
    torch.manual_seed(0)
    cfg = tiny(**changes)
    assert [i for i in range(cfg.n_layers) if cfg.layer_attention(i).kind == "global"] == global_layers
    model = TransformerLM(cfg)
    idx = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), _reference(model, idx, global_layers), atol=1e-5, rtol=1e-5)


def test_where_the_global_layer_sits_changes_the_output():
    torch.manual_seed(0)
    early, late = tiny(attention="local_global", window=3, global_layers=[0]), tiny(attention="local_global",
                                                                                     window=3, global_layers=[3])
    a, b = TransformerLM(early), TransformerLM(late)
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 256, (1, 24))
    with torch.no_grad():
        assert not torch.allclose(a(idx), b(idx), atol=1e-4)


def test_layer_attention_says_kind_window_tokens_and_gate_per_layer():
    cfg = tiny(attention="local_global", window=5, global_tokens=2, gate="dynamic", global_every=2)
    assert cfg.layer_attention(0) == LayerAttention("local", 5, 2, True)
    assert cfg.layer_attention(1) == LayerAttention("global")
    assert tiny().layer_attention(3) == LayerAttention("global")
    with pytest.raises(IndexError, match="outside 0..3"):
        cfg.layer_attention(4)


def test_the_gate_lives_only_in_modules_a_gated_local_layer_runs():
    model = TransformerLM(tiny(attention="local_global", window=5, global_tokens=2, gate="dynamic", global_every=2))
    assert [m.g_proj is not None for m in model.attns] == [True, False, True, False]
    model(torch.randint(0, 256, (1, 24)))
    assert len(model.gate_stats()["local_mean"]) == 2  # the two local layers
    shared = TransformerLM(tiny(attention="local_global", window=5, gate="dynamic", global_every=2, sharing="all"))
    assert shared.attns[0].g_proj is not None  # one module, run by local and global layers


def test_a_mixed_layout_trains_through_both_kernels():
    torch.manual_seed(0)
    model = TransformerLM(tiny(attention="local_global", window=4, global_tokens=2, global_every=2))
    idx = torch.randint(0, 256, (2, 24))
    F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("changes, match", [
    (dict(global_every=1), r"global_every=1 is invalid: expected an integer >= 2"),
    (dict(global_every=5), r"global_every=5 is invalid: must be <= n_layers=4"),
    (dict(global_layers=[4]), r"global_layers=\[4\] is invalid: expected a list of layer indices in 0..3"),
    (dict(global_layers=[1, 1]), r"global_layers=\[1, 1\] is invalid: expected distinct layer indices"),
    (dict(global_layers=[0, 1, 2, 3]), r"makes every layer global: use attention=dense"),
    (dict(global_layers="1,x"), r"global_layers='1,x' is invalid: expected a list of layer indices"),
    (dict(global_layers=[1], global_every=2), r"is a second layout beside global_every=2: set one"),
])
def test_bad_layouts_are_refused_in_one_line(changes, match):
    with pytest.raises(ConfigError, match=match):
        tiny(attention="local_global", window=4, **changes)


def test_a_layout_does_not_apply_to_dense_attention():
    assert tiny(global_every=2, global_layers=[1]).global_every is None
    assert tiny(global_layers=[1]).global_layers is None
    assert tiny(attention="local_global", window=4, global_layers=(3, 1)).to_dict()["global_layers"] == [1, 3]
