"""KV-cache decoding: every decode step's logits equal the full forward's at that position (the oracle), local
layers keep only window + global tokens, and misuse is refused by name."""

from __future__ import annotations

import pytest
import torch

from nas.model import ArchConfig, TransformerLM
from nas.model.kv_cache import KVCache

TINY = dict(seq_len=40, n_layers=3, d_model=32, n_heads=4, ffn_mult=2.0)
FP32_TOL = dict(rtol=1e-4, atol=1e-5)  # fp32: different summation orders (SDPA over slots vs the full kernel)


def tiny(**changes) -> ArchConfig:
    return ArchConfig.from_dict({**TINY, **changes})


def _lg(window: int, global_tokens: int, **more) -> dict:
    return dict(attention="local_global", window=window, global_tokens=global_tokens, **more)


CONFIGS = {
    "dense": {},
    "window_sinks": _lg(6, 3),
    "window_no_sinks": _lg(5, 0),
    "window_block4": _lg(9, 2, block_size=4),
    "window_flex": _lg(6, 2, backend="flex"),
    "gqa": dict(kv_heads=2),
    "mqa_qkv_share": dict(kv_heads=1, group_share="qkv"),
    "gqa_window": _lg(7, 1, kv_heads=2),
    "gated": _lg(6, 3, gate="dynamic"),
    "gated_gqa_no_sinks": _lg(5, 0, gate="dynamic", kv_heads=2),
    "learned_positions": dict(positions="learned"),
    "cycle_sharing": dict(sharing="cycle", unique_layers=2),
    "untied_head_gelu_wide": dict(tie_embeddings=False, ffn_mult=3.0),
}


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("name", CONFIGS)
def test_decode_steps_equal_the_full_forward_at_every_position(name):
    arch = tiny(**CONFIGS[name])
    model = TransformerLM(arch).eval()
    idx = torch.randint(0, arch.vocab_size, (2, arch.seq_len))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(arch, 2)
        steps = torch.stack([model.decode_step(idx[:, t], cache) for t in range(arch.seq_len)], dim=1)
        prefilled = KVCache(arch, 2)
        prompt = model(idx[:, :17], prefilled)  # a prefill writes the prompt's K, V; decoding continues from it
        rest = torch.stack([model.decode_step(idx[:, t], prefilled) for t in range(17, arch.seq_len)], dim=1)
    torch.testing.assert_close(steps, full, **FP32_TOL)
    torch.testing.assert_close(prompt, full[:, :17], **FP32_TOL)
    torch.testing.assert_close(rest, full[:, 17:], **FP32_TOL)


def test_gated_decode_cuts_the_gates_below_the_threshold_as_the_full_forward_does():
    arch = tiny(**_lg(6, 3, gate="dynamic", kv_heads=2), gate_threshold=0.5)
    model = TransformerLM(arch).eval()
    with torch.no_grad():
        for attn in model.attns:  # local gates of heads 0, 1 and global gates of heads 2, 3 start near 0.27
            attn.g_proj.bias.copy_(torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0]))
        idx = torch.randint(0, arch.vocab_size, (2, arch.seq_len))
        full = model(idx)
        gates = torch.stack(model._gates)  # (layers, B, H, S, 2)
        cache = KVCache(arch, 2)
        steps = torch.stack([model.decode_step(idx[:, t], cache) for t in range(arch.seq_len)], dim=1)
    assert (gates < 0.5).any() and (gates >= 0.5).any()  # some branches are cut, some kept
    torch.testing.assert_close(steps, full, **FP32_TOL)


def test_a_local_layer_keeps_window_plus_sinks_and_a_dense_layer_everything():
    local, dense = tiny(**_lg(6, 3)), tiny()
    assert [layer.slots for layer in KVCache(local, 1).layers] == [9, 9, 9]
    assert [layer.slots for layer in KVCache(dense, 1).layers] == [40, 40, 40]
    assert KVCache(local, 1, max_len=5).layers[0].slots == 5


def test_changing_an_early_token_changes_later_decode_logits_only_through_the_cache():
    arch = tiny(**_lg(4, 0), n_layers=1)  # one local layer: token 0 leaves the window after 4 positions
    model = TransformerLM(arch).eval()
    idx = torch.randint(0, arch.vocab_size, (1, 12))
    other = idx.clone()
    other[0, 0] = (idx[0, 0] + 1) % arch.vocab_size
    with torch.no_grad():
        a, b = KVCache(arch, 1), KVCache(arch, 1)
        la = [model.decode_step(idx[:, t], a) for t in range(12)]
        lb = [model.decode_step(other[:, t], b) for t in range(12)]
    assert not torch.equal(la[3], lb[3])  # token 0 is still in the window of position 3
    torch.testing.assert_close(la[4], lb[4])  # and out of it at position 4 (one layer: no earlier mixing)


def test_misuse_is_refused_by_name():
    arch = tiny()
    model = TransformerLM(arch).eval()
    with torch.no_grad():
        cache = KVCache(arch, 1, max_len=2)
        model.decode_step(torch.tensor([1]), cache)
        with pytest.raises(ValueError, match=r"forward fills an empty KV cache; this one holds 1 positions"):
            model(torch.tensor([[1, 2]]), cache)
        model.decode_step(torch.tensor([1]), cache)
        with pytest.raises(ValueError, match=r"KV cache is full \(2 positions\)"):
            model.decode_step(torch.tensor([1]), cache)
    with pytest.raises(ValueError, match=r"KVCache max_len=41 is invalid: expected 1..ArchConfig.seq_len=40"):
        KVCache(arch, 1, max_len=41)
