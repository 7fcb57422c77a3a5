"""TransformerLM: grouping, sharing, causality and training, against closed forms and unshared references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.model import ArchConfig, TransformerLM
from nas.model.sharing import layer_map

TINY = dict(seq_len=24, n_layers=2, d_model=32, n_heads=4, ffn_mult=2.0)


def tiny(**changes) -> ArchConfig:
    return ArchConfig.from_dict({**TINY, **changes})


# ---- head grouping ----------------------------------------------------------------------


def _attention_params(d: int, H: int, kv: int, hd: int) -> int:
    return d * (H + 2 * kv) * hd + H * hd * d


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_attention_parameter_count_closed_form(kv_heads):
    cfg = tiny(kv_heads=kv_heads)
    attn = TransformerLM(cfg).attns[0]
    projections = attn.wqkv.weight.numel() + attn.wo.weight.numel()
    assert projections == _attention_params(32, 4, kv_heads, 8)


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_gqa_equals_mha_with_repeated_kv_and_sdpa_gqa(kv_heads):
    H, hd, d = 4, 8, 32
    gqa = TransformerLM(tiny(kv_heads=kv_heads)).attns[0]
    mha = TransformerLM(tiny()).attns[0]
    wq, wk, wv = gqa.wqkv.weight.split([H * hd, kv_heads * hd, kv_heads * hd])
    rep = lambda w: w.view(kv_heads, hd, d).repeat_interleave(H // kv_heads, dim=0).reshape(H * hd, d)  # noqa: E731
    with torch.no_grad():
        mha.wqkv.weight.copy_(torch.cat([wq, rep(wk), rep(wv)]))
        mha.wo.weight.copy_(gqa.wo.weight)
        mha.norm.weight.copy_(gqa.norm.weight)
    x = torch.randn(2, 20, d)
    out = gqa(x)
    torch.testing.assert_close(out, mha(x), atol=1e-5, rtol=1e-5)
    # PyTorch's own GQA path as a second oracle
    h = gqa.norm(x)
    q = (h @ wq.T).view(2, 20, H, hd).transpose(1, 2)
    k = (h @ wk.T).view(2, 20, kv_heads, hd).transpose(1, 2)
    v = (h @ wv.T).view(2, 20, kv_heads, hd).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, y.transpose(1, 2).reshape(2, 20, H * hd) @ gqa.wo.weight.T, atol=1e-5, rtol=1e-5)


def test_qkv_sharing_heads_of_a_group_are_identical_without_gate():
    attn = TransformerLM(tiny(kv_heads=2, group_share="qkv")).attns[0]
    assert attn.wqkv.weight.shape == (3 * 2 * 8, 32)
    captured = {}
    attn.wo.register_forward_pre_hook(lambda m, args: captured.setdefault("y", args[0]))
    attn(torch.randn(1, 10, 32))
    heads = captured["y"].view(1, 10, 4, 8)
    torch.testing.assert_close(heads[:, :, 0], heads[:, :, 1])  # same group
    assert not torch.allclose(heads[:, :, 1], heads[:, :, 2])  # different groups


# ---- sharing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "L", "M", "expected"),
    [
        ("none", 6, 6, [0, 1, 2, 3, 4, 5]),
        ("all", 6, 1, [0, 0, 0, 0, 0, 0]),
        ("sequence", 6, 3, [0, 0, 1, 1, 2, 2]),
        ("cycle", 6, 3, [0, 1, 2, 0, 1, 2]),
        ("cycle_rev", 6, 3, [0, 1, 2, 2, 1, 0]),  # Takase & Kiyono 2021, Fig. 1
        ("cycle_rev", 9, 3, [0, 1, 2, 0, 1, 2, 2, 1, 0]),
        ("adjacent", 6, 3, [0, 0, 1, 1, 2, 2]),  # MobileLLM immediate block-wise repeat
    ],
)
def test_layer_maps(pattern, L, M, expected):
    assert layer_map(pattern, L, M) == expected


def _closed_form_unique(cfg: ArchConfig) -> int:
    d, V, S, H, kv, hd, hid, L, k = (cfg.d_model, cfg.vocab_size, cfg.seq_len, cfg.n_heads, cfg.n_kv, cfg.hd,
                                     cfg.ffn_hidden, cfg.n_layers, cfg.ffn_blocks)
    n_q = H if cfg.group_share == "kv" else kv
    m = 2 if cfg.ffn == "gelu" else 3  # weight matrices: up, down (+ gate)
    post = d if cfg.post_norms else 0
    attn = d + d * (n_q + 2 * kv) * hd + H * hd * d + (d * 2 * H + 2 * H if cfg.gate == "dynamic" else 0)
    attn += post + (2 * hd if cfg.qk_norm else 0)
    ffn = d + post + m * d * hid
    embed = V * d + (S * d if cfg.positions == "learned" else 0) + d
    if cfg.sharing == "ffn_block_diag":
        pairs = (L + 1) // 2
        ffns = L * (d + post + m * d * hid * (k - 1) // k) + pairs * m * d * hid // k
        return embed + L * attn + ffns
    n_attn = cfg.n_unique if cfg.sharing_scope in ("attention", "both") else L
    n_ffn = cfg.n_unique if cfg.sharing_scope in ("ffn", "both") else L
    return embed + n_attn * attn + n_ffn * ffn


SHARING_CASES = [
    dict(sharing="none"),
    dict(sharing="none", positions="learned"),
    dict(sharing="all"),
    dict(sharing="sequence", unique_layers=3, n_layers=6),
    dict(sharing="cycle", unique_layers=2, n_layers=6),
    dict(sharing="cycle_rev", unique_layers=3, n_layers=6),
    dict(sharing="adjacent", n_layers=5),
    dict(sharing="cycle", unique_layers=2, n_layers=4, sharing_scope="attention"),
    dict(sharing="cycle", unique_layers=2, n_layers=4, sharing_scope="ffn"),
    dict(sharing="ffn_block_diag", sharing_scope="ffn", n_layers=3),
    dict(sharing="cycle_rev", unique_layers=2, n_layers=4, kv_heads=2, group_share="qkv",
         attention="local_global", window=4, global_tokens=2, gate="dynamic"),
    dict(sharing="ffn_block_diag", n_layers=3, ffn="swiglu", intermediate_size=40),
    dict(sharing="cycle", unique_layers=2, n_layers=4, ffn="geglu", qk_norm=True, post_norms=True, head_dim=12),
]


@pytest.mark.parametrize("changes", SHARING_CASES)
def test_unique_and_total_parameter_counts(changes):
    cfg = tiny(**changes)
    counts = TransformerLM(cfg).param_counts()
    assert counts["unique"] == _closed_form_unique(cfg)
    assert counts["total"] == _closed_form_unique(cfg.replace(sharing="none", sharing_scope="both", unique_layers=None))


def _unshared_copy(shared: TransformerLM) -> TransformerLM:
    """An unshared model whose layer i holds a copy of the weights shared layer i uses."""
    cfg = shared.cfg.replace(sharing="none", sharing_scope="both", unique_layers=None)
    ref = TransformerLM(cfg)
    ref.tok_emb.load_state_dict(shared.tok_emb.state_dict())
    if shared.pos_emb is not None:
        ref.pos_emb.load_state_dict(shared.pos_emb.state_dict())
    ref.norm.load_state_dict(shared.norm.state_dict())
    with torch.no_grad():
        for i, (a, f) in enumerate(zip(shared.attn_map, shared.ffn_map)):
            ref.attns[i].load_state_dict(shared.attns[a].state_dict())
            for name, w in zip(shared.ffns[f].names, shared.ffns[f].weights()):
                getattr(ref.ffns[i], f"{name}_weight").copy_(w)
            ref.ffns[i].norm.load_state_dict(shared.ffns[f].norm.state_dict())
            if shared.ffns[f].post_norm is not None:
                ref.ffns[i].post_norm.load_state_dict(shared.ffns[f].post_norm.state_dict())
    return ref


@pytest.mark.parametrize("changes", SHARING_CASES[1:])
def test_shared_equals_unshared_copy_and_gradients_sum(changes):
    shared = TransformerLM(tiny(**changes))
    ref = _unshared_copy(shared)
    idx = torch.randint(0, 256, (2, 24))
    logits, ref_logits = shared(idx), ref(idx)
    loss, ref_loss = (F.cross_entropy(out.flatten(0, 1), idx.flatten()) for out in (logits, ref_logits))
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    loss.backward()
    ref_loss.backward()
    for m in range(len(shared.attns)):
        copies = [i for i, a in enumerate(shared.attn_map) if a == m]
        for name, p in shared.attns[m].named_parameters():
            expected = sum(dict(ref.attns[i].named_parameters())[name].grad for i in copies)
            torch.testing.assert_close(p.grad, expected, atol=1e-5, rtol=1e-4)
    if shared.cfg.sharing == "ffn_block_diag":
        k, hid, d = shared.cfg.ffn_blocks, shared.cfg.ffn_hidden, shared.cfg.d_model
        diag = shared.ffns[0].fc1_blocks.diagonal
        assert diag is shared.ffns[1].fc1_blocks.diagonal and diag is not shared.ffns[2].fc1_blocks.diagonal
        grad_sum = ref.ffns[0].fc1_weight.grad + ref.ffns[1].fc1_weight.grad
        expected = torch.stack([grad_sum[r * hid // k:(r + 1) * hid // k, r * d // k:(r + 1) * d // k]
                                for r in range(k)])
        torch.testing.assert_close(diag.grad, expected, atol=1e-5, rtol=1e-4)
    else:
        for m in range(len(shared.ffns)):
            copies = [i for i, f in enumerate(shared.ffn_map) if f == m]
            expected = sum(ref.ffns[i].fc1_weight.grad for i in copies)
            torch.testing.assert_close(shared.ffns[m].fc1_weight.grad, expected, atol=1e-5, rtol=1e-4)


def test_shared_weights_are_one_tensor():
    model = TransformerLM(tiny(sharing="all", n_layers=4))
    assert len(model.attns) == 1 and len(model.ffns) == 1
    assert model.param_counts()["total"] > model.param_counts()["unique"]


# ---- causality and training ---------------------------------------------------------------

KNOBS = [
    dict(),
    dict(attention="local_global", window=5, global_tokens=0),
    dict(attention="local_global", window=5, global_tokens=3),
    dict(attention="local_global", window=5, global_tokens=3, gate="dynamic"),
    dict(attention="local_global", window=4, global_tokens=2, backend="flex"),
    dict(kv_heads=1),
    dict(kv_heads=2, group_share="qkv", attention="local_global", window=6, global_tokens=1, gate="dynamic"),
    dict(sharing="cycle_rev", n_layers=4, unique_layers=2),
    dict(sharing="ffn_block_diag", sharing_scope="ffn"),
    dict(sharing="adjacent", n_layers=4, sharing_scope="attention"),
    dict(ffn="swiglu", intermediate_size=40, qk_norm=True, kv_heads=2),
    dict(ffn="geglu", post_norms=True, sharing="ffn_block_diag", attention="local_global", window=5, global_tokens=2),
]


@pytest.mark.parametrize("changes", KNOBS)
def test_causal_perturbing_a_token_changes_no_earlier_output(changes):
    model = TransformerLM(tiny(**changes)).eval()
    idx = torch.randint(0, 256, (1, 24))
    for t in (0, 7, 23):
        changed = idx.clone()
        changed[0, t] = (changed[0, t] + 1) % 256
        with torch.no_grad():
            a, b = model(idx), model(changed)
        torch.testing.assert_close(a[:, :t], b[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(a[:, t], b[:, t])


TRAIN_KNOBS = [k for k in KNOBS if k.get("backend") != "flex"] + [
    dict(precision={"attention": "bf16", "ffn": "fp8_e4m3", "embed": "fp16"}),
    dict(precision={"ffn": "adaptive"}),
    dict(precision={"attention": "fp8_e5m2"}),
    dict(ffn="swiglu", precision={"ffn": "fp8_e4m3", "attention": "bf16"}),
]


@pytest.mark.parametrize("changes", TRAIN_KNOBS)
def test_tiny_model_trains_with_falling_loss(changes):
    torch.manual_seed(0)
    model = TransformerLM(tiny(**changes))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.randint(0, 16, (4, 25))  # a small alphabet: learnable unigram and bigram structure
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(data[:, :-1]).flatten(0, 1), data[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < 0.6 * losses[0]


def test_flex_backend_refuses_cpu_training_clearly():
    model = TransformerLM(tiny(attention="local_global", window=4, backend="flex"))
    with pytest.raises(ValueError, match="backend='flex' cannot train on CPU"):
        model(torch.randint(0, 256, (1, 24)))


def test_gate_stats_per_layer_and_head():
    model = TransformerLM(tiny(attention="local_global", window=4, global_tokens=2, gate="dynamic",
                               sharing="all", n_layers=3))
    model(torch.randint(0, 256, (2, 24)))
    stats = model.gate_stats(threshold=0.5)
    assert len(stats["local_mean"]) == 3 and len(stats["local_mean"][0]) == 4
    for mean, below in zip(stats["global_mean"], stats["global_below"]):
        assert all(0.0 < m < 1.0 for m in mean) and all(0.0 <= b <= 1.0 for b in below)
    # oracle: with a zero projection each head's gates are sigmoid(bias), at every position of every layer
    bias = torch.tensor([-2.0, -1.0, 0.5, 2.0])
    with torch.no_grad():
        g = model.attns[0].g_proj
        g.weight.zero_()
        g.bias.copy_(torch.stack([bias, -bias], dim=1).reshape(-1))  # (H, 2): local, global per head
    model(torch.randint(0, 256, (2, 24)))
    stats = model.gate_stats(threshold=0.5)
    for layer in range(3):
        torch.testing.assert_close(torch.tensor(stats["local_mean"][layer]), torch.sigmoid(bias))
        torch.testing.assert_close(torch.tensor(stats["global_mean"][layer]), torch.sigmoid(-bias))
        assert stats["local_below"][layer] == [1.0, 1.0, 0.0, 0.0]
        assert stats["global_below"][layer] == [0.0, 0.0, 1.0, 1.0]


def test_sequence_longer_than_config_is_refused():
    with pytest.raises(ValueError, match="seq_len=24"):
        TransformerLM(tiny())(torch.zeros(1, 25, dtype=torch.long))


def test_rope_matches_complex_rotation_and_scores_depend_only_on_relative_position() -> None:
    from nas.model.transformer import apply_rope, rope_tables

    torch.manual_seed(0)
    S, hd = 12, 8
    cos, sin = rope_tables(S, hd, torch.device("cpu"))
    x = torch.randn(2, 3, S, hd)
    # oracle: RoFormer's rotation as complex multiplication of (x_i, x_{i+hd/2}) by exp(i * pos * theta_i)
    theta = 10000.0 ** (-torch.arange(hd // 2, dtype=torch.float64) * 2 / hd)
    z = torch.complex(x[..., : hd // 2].double(), x[..., hd // 2 :].double())
    rotated = z * torch.polar(torch.ones(S, hd // 2, dtype=torch.float64), torch.arange(S).double()[:, None] * theta)
    expected = torch.cat((rotated.real, rotated.imag), dim=-1).float()
    torch.testing.assert_close(apply_rope(x, cos, sin), expected)  # fp32 defaults: the same float computation
    q, k = torch.randn(hd), torch.randn(hd)
    qs, ks = apply_rope(q.expand(1, 1, S, hd), cos, sin)[0, 0], apply_rope(k.expand(1, 1, S, hd), cos, sin)[0, 0]
    torch.testing.assert_close(qs[7] @ ks[4], qs[5] @ ks[2])  # offset 3 both times
    torch.testing.assert_close(qs[9] @ ks[9], q @ k)  # offset 0: no rotation


def test_rope_model_has_no_position_table_and_stays_causal() -> None:
    cfg = tiny(positions="rope")
    model = TransformerLM(cfg).eval()
    assert model.pos_emb is None
    assert model.param_counts()["unique"] == _closed_form_unique(cfg)
    x = torch.randint(0, 256, (1, cfg.seq_len))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])
