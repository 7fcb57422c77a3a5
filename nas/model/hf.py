"""Hugging Face transformers as an export format and an import source: ArchConfig <-> config.json (+ safetensors).

Export picks the transformers family that expresses an ArchConfig's knobs with Llama-style blocks (RMSNorm,
rotary, bias-free projections, gated MLP) and no custom code:

| needs                                   | family (model_type)          | why                                        |
| --------------------------------------- | ---------------------------- | ------------------------------------------ |
| post_norms (with qk_norm)               | Gemma 3 text (gemma3_text)   | the only one with norms on sublayer outputs |
| qk_norm                                 | Qwen3 (qwen3)                | per-head q/k RMSNorm, per-layer layer_types |
| one window in every layer               | Mistral (mistral)            | `sliding_window` in every layer            |
| a per-layer local:global layout         | Ministral (ministral)        | Mistral's blocks with per-layer layer_types |
| dense attention, GQA/MQA, SwiGLU/GeGLU  | Llama (llama)                | the plain block                            |

Ministral, Qwen3 and Gemma 3 carry per-layer `layer_types`: a per-layer local:global layout maps there (`layer_types`
below is the one place that writes the list, from ArchConfig.layer_attention; `layout_of` reads one back). A knob no
family can express is refused by name with the nearest thing that exists (`refusal`); nothing is dropped.

Window convention: nas's query i sees keys i - W < j <= i; transformers' sliding window (masking_utils
sliding_window_overlay, `kv_idx > q_idx - sliding_window`, installed 5.x) is the same, so `sliding_window = W`.
tests/test_hf_export.py checks the boundary (and that W + 1 would differ) by logits and by cached generation.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.model.config import ArchConfig

if TYPE_CHECKING:
    import torch

    from nas.model.transformer import TransformerLM

INSTALL = 'pip install -e ".[hf]"'
RMS_EPS = 1.1920928955078125e-07  # nn.RMSNorm's default eps in fp32: torch.finfo(torch.float32).eps
ACT = {"swiglu": "silu", "geglu": "gelu_pytorch_tanh"}  # gated FFN kind -> hidden_act


class ExportRefused(ValueError):
    """A knob the target format cannot express: names the knob and the nearest thing that exists."""


def require_hf() -> Any:
    """The transformers module; ValueError naming the install command when the `hf` extra is missing."""
    try:
        import safetensors  # noqa: F401
        import transformers
    except ImportError as err:
        raise ValueError(f"Hugging Face export and import need the `hf` extra ({err.name} is missing): "
                         f"{INSTALL}") from err
    return transformers


@dataclass(frozen=True)
class Family:
    """A transformers architecture nas exports to."""

    model_type: str
    config_class: str
    architecture: str
    qk_norm: bool  # its attention always norms q and k per head
    post_norms: bool  # its blocks always norm each sublayer's output
    layer_types: bool  # its config carries per-layer `layer_types`


FAMILIES = {f.model_type: f for f in (
    Family("llama", "LlamaConfig", "LlamaForCausalLM", False, False, False),
    Family("mistral", "MistralConfig", "MistralForCausalLM", False, False, False),
    Family("ministral", "MinistralConfig", "MinistralForCausalLM", False, False, True),
    Family("qwen3", "Qwen3Config", "Qwen3ForCausalLM", True, False, True),
    Family("gemma3_text", "Gemma3TextConfig", "Gemma3ForCausalLM", True, True, True),
)}


def layer_types(arch: ArchConfig) -> list[str]:
    """transformers' per-layer attention kinds: sliding_attention where a layer has a window, else full_attention."""
    return ["sliding_attention" if arch.layer_attention(i).kind == "local" else "full_attention"
            for i in range(arch.n_layers)]


def layout_of(types: list[str]) -> dict[str, Any]:
    """The ArchConfig layout knobs of a transformers `layer_types` list that mixes sliding and full layers: a
    repeating pattern (global_every, the global layer last in each group) where it is one, else global_layers."""
    full = [i for i, t in enumerate(types) if t != "sliding_attention"]
    n = len(types)
    for every in range(2, n + 1):
        if full == [i for i in range(n) if (i + 1) % every == 0]:
            return {"global_every": every}
    return {"global_layers": full}


def _mixed(arch: ArchConfig) -> bool:
    """Whether some layers of `arch` are local and some global (a per-layer layout)."""
    return len(set(layer_types(arch))) > 1


def refusal(arch: ArchConfig) -> str | None:
    """Why no transformers family can hold `arch` (one line: the knob, its value, the nearest that exists), or None."""
    if arch.gate != "none":
        return (f"gate={arch.gate}: no transformers family gates its attention branches per head by input; nearest: "
                "gate=none (a plain sliding window, Mistral)")
    if arch.global_tokens:
        return (f"global_tokens={arch.global_tokens}: no transformers family lets every query see the first "
                f"{arch.global_tokens} positions beside its window; nearest: global_tokens=0 (Mistral's window), or "
                "gpt-oss's learned per-head `sinks`, which are one extra softmax logit per head, not key positions")
    if arch.sharing != "none":
        what = ("FFN sub-blocks shared by adjacent layers" if arch.sharing == "ffn_block_diag"
                else "layers that reuse another layer's weights")
        return (f"sharing={arch.sharing}: transformers' families hold one full weight set per layer, no {what}; "
                "nearest: sharing=none")
    formats = {k: getattr(arch.precision, k) for k in ("attention", "ffn", "embed")}
    off = [f"precision.{k}={v}" for k, v in formats.items() if v != "fp32"]
    if off:
        return (f"{off[0]}: config.json has one storage dtype for every weight (`dtype`), no per-layer compute "
                "format or fp8 scaling; nearest: fp32 weights everywhere (cast the loaded model as a whole)")
    if arch.group_share == "qkv" and arch.n_kv < arch.n_heads:
        return ("group_share=qkv: transformers' families share K and V across a group (num_key_value_heads), not Q; "
                "nearest: group_share=kv (GQA)")
    if arch.positions != "rope":
        return (f"positions={arch.positions}: the Llama-style families encode positions by rotary only; nearest: "
                "positions=rope")
    if arch.ffn == "gelu":
        return ("ffn=gelu: no transformers family pairs RMSNorm and rotary with an ungated MLP; nearest: ffn=geglu "
                f"(hidden_act {ACT['geglu']}) or ffn=swiglu (hidden_act silu)")
    if arch.post_norms and not arch.qk_norm:
        return ("post_norms=true with qk_norm=false: the one family with post norms (Gemma 3) always norms q and k; "
                "nearest: qk_norm=true")
    if arch.post_norms and arch.tie_embeddings:
        return ("tie_embeddings=true with post_norms (Gemma 3): Gemma multiplies its input embedding by "
                "sqrt(hidden_size) and reads the tied table unscaled as the head, nas scales neither; nearest: "
                "tie_embeddings=false")
    return None


def choose_family(arch: ArchConfig) -> tuple[Family, str]:
    """The family that expresses `arch` and why; ExportRefused (the refusal line) when none does."""
    refused = refusal(arch)
    if refused is not None:
        raise ExportRefused(refused)
    window = f" and a {arch.window}-token window in every layer" if arch.attention == "local_global" else ""
    if _mixed(arch):
        n_global = layer_types(arch).count("full_attention")
        window = f" and a {arch.window}-token window in its local layers ({n_global} " \
                 f"of {arch.n_layers} layers global, per-layer layer_types)"
    if arch.post_norms:
        return FAMILIES["gemma3_text"], f"post norms and q/k norms need Gemma 3 (layer_types carry the window){window}"
    if arch.qk_norm:
        return FAMILIES["qwen3"], f"q/k norms without post norms: Qwen3 (layer_types carry the window){window}"
    if _mixed(arch):
        return FAMILIES["ministral"], f"Llama blocks with per-layer local:global layer_types: Ministral{window}"
    if arch.attention == "local_global":
        return FAMILIES["mistral"], f"one window in every layer: Mistral (sliding_window={arch.window})"
    return FAMILIES["llama"], "dense attention with Llama blocks (GQA, gated MLP): Llama"


def hf_config(arch: ArchConfig, family: Family) -> Any:
    """The transformers config (a PretrainedConfig) of `arch` in `family`."""
    transformers = require_hf()
    fields: dict[str, Any] = dict(
        vocab_size=arch.vocab_size, hidden_size=arch.d_model, num_hidden_layers=arch.n_layers,
        num_attention_heads=arch.n_heads, num_key_value_heads=arch.n_kv, head_dim=arch.hd,
        intermediate_size=arch.ffn_hidden, tie_word_embeddings=arch.tie_embeddings,
        max_position_embeddings=arch.seq_len, rms_norm_eps=RMS_EPS, attention_bias=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, architectures=[family.architecture],
        dtype="float32")
    rope = {"rope_type": "default", "rope_theta": float(arch.rope_theta)}
    if family.model_type == "gemma3_text":
        fields.update(hidden_activation=ACT[arch.ffn], query_pre_attn_scalar=arch.hd,
                      sliding_window=arch.window or arch.seq_len, final_logit_softcapping=None,
                      attn_logit_softcapping=None,
                      rope_parameters={"full_attention": dict(rope), "sliding_attention": dict(rope)})
    else:
        fields.update(hidden_act=ACT[arch.ffn], rope_parameters=rope)
    if family.model_type == "llama":
        fields["mlp_bias"] = False
    if family.model_type in ("mistral", "ministral"):
        fields["sliding_window"] = arch.window
    if family.model_type == "qwen3":
        windowed = arch.attention == "local_global"
        fields.update(use_sliding_window=windowed, sliding_window=arch.window, max_window_layers=0)
    if family.layer_types:
        fields["layer_types"] = layer_types(arch)
    return getattr(transformers, family.config_class)(**fields)


def _weight_names(model: TransformerLM, family: Family) -> list[tuple[str, str]]:
    """(transformers name, nas state-dict name) of every weight but q/k/v, which split nas's fused wqkv: the one
    table both directions read (hf_state_dict, load_hf_weights)."""
    gemma = family.model_type == "gemma3_text"
    names = [("model.embed_tokens.weight", "tok_emb.weight"), ("model.norm.weight", "norm.weight")]
    if model.lm_head is not None:
        names.append(("lm_head.weight", "lm_head"))
    for i, (a, f) in enumerate(zip(model.attn_map, model.ffn_map)):
        p, at, ff = f"model.layers.{i}.", f"attns.{a}.", f"ffns.{f}."
        names += [(p + "input_layernorm.weight", at + "norm.weight"), (p + "self_attn.o_proj.weight", at + "wo.weight"),
                  (p + "mlp.gate_proj.weight", ff + "fc1_weight"), (p + "mlp.up_proj.weight", ff + "fc3_weight"),
                  (p + "mlp.down_proj.weight", ff + "fc2_weight")]
        if model.cfg.qk_norm:
            names += [(p + "self_attn.q_norm.weight", at + "q_norm.weight"),
                      (p + "self_attn.k_norm.weight", at + "k_norm.weight")]
        if gemma:
            names += [(p + "post_attention_layernorm.weight", at + "post_norm.weight"),
                      (p + "pre_feedforward_layernorm.weight", ff + "norm.weight"),
                      (p + "post_feedforward_layernorm.weight", ff + "post_norm.weight")]
        else:
            names.append((p + "post_attention_layernorm.weight", ff + "norm.weight"))
    return names


def _affine(name: str, cfg: ArchConfig, family: Family) -> tuple[float, float]:
    """(div, shift) with transformers' weight = nas's / div + shift: Gemma 3's sqrt(d_model)-scaled embedding and
    1 + w norms, identity elsewhere."""
    if family.model_type != "gemma3_text":
        return 1.0, 0.0
    if name == "model.embed_tokens.weight":
        return math.sqrt(cfg.d_model), 0.0
    return (1.0, -1.0) if name.endswith("norm.weight") else (1.0, 0.0)


def _qkv_names(i: int) -> list[str]:
    return [f"model.layers.{i}.self_attn.{x}_proj.weight" for x in "qkv"]


def hf_state_dict(model: TransformerLM, family: Family) -> dict[str, torch.Tensor]:
    """The state dict of the transformers model of `family` holding `model`'s weights (tied head left out).

    Gemma 3 scales the embedding by sqrt(d_model) (its table gets ours / sqrt(d_model); the head is untied) and
    weights its norms by 1 + w (they get ours - 1); its post_attention_layernorm is our attention's post norm.
    """
    cfg, ours = model.cfg, model.state_dict()
    sd: dict[str, torch.Tensor] = {}
    for hf, name in _weight_names(model, family):
        div, shift = _affine(hf, cfg, family)
        sd[hf] = ours[name] / div + shift if (div, shift) != (1.0, 0.0) else ours[name]
    for i, a in enumerate(model.attn_map):
        parts = ours[f"attns.{a}.wqkv.weight"].split([cfg.n_heads * cfg.hd, cfg.n_kv * cfg.hd, cfg.n_kv * cfg.hd])
        sd.update(zip(_qkv_names(i), parts))
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items()}


def load_hf_weights(model: TransformerLM, tensors: dict[str, torch.Tensor], family: Family, where: str) -> None:
    """Load a transformers state dict of `family` into `model` (the inverse of hf_state_dict); ValueError naming
    the first missing or unexpected weight."""
    import torch

    cfg = model.cfg
    wanted = {hf for hf, _ in _weight_names(model, family)} | {n for i in range(cfg.n_layers) for n in _qkv_names(i)}
    extra, missing = sorted(set(tensors) - wanted), sorted(wanted - set(tensors))
    if missing or extra:
        what = (f"lacks {missing[0]}" if missing else
                f"has {extra[0]}, which a {family.model_type} model of its config has not")
        raise ValueError(f"{where}: model.safetensors {what}")
    sd: dict[str, torch.Tensor] = {}
    for hf, name in _weight_names(model, family):
        div, shift = _affine(hf, cfg, family)
        sd[name] = (tensors[hf].float() - shift) * div if (div, shift) != (1.0, 0.0) else tensors[hf].float()
    for i, a in enumerate(model.attn_map):
        sd[f"attns.{a}.wqkv.weight"] = torch.cat([tensors[n].float() for n in _qkv_names(i)])
    try:
        model.load_state_dict(sd)
    except RuntimeError as err:  # a shape that differs from the config's
        raise ValueError(f"{where}: model.safetensors does not match its config.json "
                         f"({' '.join(str(err).split())[:300]})") from err


@dataclass(frozen=True)
class Written:
    """What write_hf wrote: the folder, the family and why it was chosen, and whether weights came with it."""

    out: Path
    family: Family
    reason: str
    weights: bool


def check_out(out: str | Path, force: bool) -> Path:
    """The output folder: refused when it exists, is not empty and force is not set."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not force:
        raise ValueError(f"out={str(path)!r} exists and is not an empty folder: it is kept; pass force=true to "
                         "replace it, or choose another out")
    return path


def write_hf(arch: ArchConfig, out: str | Path, model: TransformerLM | None = None, force: bool = False,
             record: Callable[[Path], None] | None = None) -> Written:
    """Write config.json and generation_config.json (and model.safetensors from `model`) into `out`, whole or not
    at all: ExportRefused before anything is written when no family expresses `arch`; `record(out)` runs once the
    files are complete, before the folder appears (the store's record of the export)."""
    family, reason = choose_family(arch)
    transformers = require_hf()
    from safetensors.torch import save_file

    path = check_out(out, force)
    config = hf_config(arch, family)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        config.save_pretrained(partial)
        transformers.GenerationConfig(bos_token_id=None, eos_token_id=None, pad_token_id=None,
                                      do_sample=False).save_pretrained(partial)
        if model is not None:
            save_file(hf_state_dict(model, family), str(partial / "model.safetensors"), metadata={"format": "pt"})
        if record is not None:
            record(path)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        partial.replace(path)
    except OSError as err:
        raise ValueError(f"out={str(path)!r}: cannot write it: {err.strerror or err}") from err
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return Written(path, family, reason, model is not None)


# ---- import: a local config.json as a target ----------------------------------------------------------------------
GATED = {v: k for k, v in ACT.items()}  # hidden_act -> gated FFN kind


def read_hf_config(path: str | Path, key: str = "target") -> Any:
    """The transformers config of a local config.json or model folder; ValueError naming the path when unreadable."""
    transformers = require_hf()
    p = Path(path)
    folder = p.parent if p.is_file() else p
    if not (folder / "config.json").is_file():
        raise ValueError(f"{key}=hf:{path}: no config.json there (expected a local config.json or model folder)")
    try:
        return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{key}=hf:{path}: {folder / 'config.json'} is not a transformers config "
                         f"({' '.join(str(err).split())})") from err


def arch_from_hf(path: str | Path, key: str = "target") -> tuple[ArchConfig, dict[str, Any]]:
    """A local transformers config as the cost model's dense sizes and the knobs it ships (target units); `key`
    names the setting in errors."""
    config = read_hf_config(path, key)
    where = f"{key}=hf:{path}"
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(f"{where}: model_type={model_type!r} is not supported: expected one of "
                         f"{', '.join(FAMILIES)}")
    act = getattr(config, "hidden_activation", None) or config.hidden_act
    if act not in GATED:
        raise ValueError(f"{where}: hidden_act={act!r} is not modelled: expected one of {', '.join(GATED)}")
    for key in ("attention_bias", "mlp_bias"):
        if getattr(config, key, False):
            raise ValueError(f"{where}: {key}=true is not modelled (the cost model has bias-free projections)")
    rope = config.rope_parameters or {}
    rope = rope.get("full_attention", rope)
    family = FAMILIES[model_type]
    sizes = dict(vocab_size=config.vocab_size, seq_len=config.max_position_embeddings,
                 n_layers=config.num_hidden_layers, d_model=config.hidden_size, n_heads=config.num_attention_heads,
                 head_dim=getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
                 ffn=GATED[act], intermediate_size=config.intermediate_size,
                 tie_embeddings=bool(config.tie_word_embeddings), positions="rope", qk_norm=family.qk_norm,
                 post_norms=family.post_norms, rope_theta=float(rope.get("rope_theta", 10000.0)))
    knobs: dict[str, Any] = {}
    if config.num_key_value_heads != config.num_attention_heads:
        knobs["kv_heads"] = config.num_key_value_heads
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or ["sliding_attention" if window else "full_attention"] * \
        config.num_hidden_layers
    if window and all(t == "sliding_attention" for t in types):
        knobs.update(attention="local_global", window=min(int(window), config.max_position_embeddings),
                     global_tokens=0)
    elif window and len(set(types)) > 1:  # a per-layer layout: local layers with the window, the rest global
        knobs.update(attention="local_global", window=min(int(window), config.max_position_embeddings),
                     global_tokens=0, **layout_of(list(types)))
    try:
        return ArchConfig.from_dict(sizes), knobs
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err




# ---- import: a local checkpoint as the inherit-and-distill parent -------------------------------------------------
def hf_parent_folder(spec: str) -> Path:
    """The folder of a `hf:DIR` parent; ValueError when the value is not of that form or holds no checkpoint."""
    if not (isinstance(spec, str) and spec.startswith("hf:") and len(spec) > 3):
        raise ValueError(f"proxy.parent={spec!r} is invalid: expected null or hf:DIR (a local transformers "
                         "model folder)")
    folder = Path(spec[3:]).expanduser()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ValueError(f"parent={spec}: no {name} in {folder} (a parent folder holds config.json, "
                             "model.safetensors and tokenizer.json, as save_pretrained writes them)")
    return folder


def hf_parent_digest(spec: str) -> str:
    """sha256 of a parent checkpoint's content: its config.json and model.safetensors."""
    import hashlib

    folder, h = hf_parent_folder(spec), hashlib.sha256(b"nas-hf-parent-v1")
    for name in ("config.json", "model.safetensors"):
        data = (folder / name).read_bytes()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def hf_parent_arch(spec: str, seq_len: int) -> ArchConfig:
    """The dense architecture of a parent checkpoint at the proxy's context; ValueError when it carries knobs (the
    conversions start from a dense multi-head parent) or is shorter than `seq_len`."""
    folder = hf_parent_folder(spec)
    arch, knobs = arch_from_hf(folder, key="parent")
    if knobs:
        name, value = next(iter(knobs.items()))
        raise ValueError(f"parent={spec}: the checkpoint has {name}={value}; inherit converts a dense parent "
                         "(full attention in every layer, num_key_value_heads = num_attention_heads)")
    if seq_len > arch.seq_len:
        raise ValueError(f"parent={spec}: proxy.seq_len={seq_len} exceeds the checkpoint's "
                         f"max_position_embeddings={arch.seq_len}")
    return ArchConfig.from_dict({**arch.to_dict(), "seq_len": seq_len})


def hf_tokenizer_vocab(spec: str) -> int:
    """The vocabulary size of a parent's tokenizer.json; ValueError when it is unreadable or exceeds the model's."""
    try:
        from tokenizers import Tokenizer
    except ImportError as err:
        raise ValueError(f"parent=hf:DIR needs the `hf` extra (tokenizers is missing): {INSTALL}") from err
    path = hf_parent_folder(spec) / "tokenizer.json"
    try:
        size = Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    except Exception as err:  # tokenizers raises its own Exception type for a malformed file
        raise ValueError(f"parent={spec}: {path} is not a tokenizers tokenizer.json ({' '.join(str(err).split())})") \
            from err
    return size


def load_hf_parent(spec: str, seq_len: int) -> tuple[TransformerLM, str]:
    """A local checkpoint as nas's TransformerLM at the proxy's context (eval mode, fp32) and its content digest."""
    require_hf()
    from safetensors.torch import load_file

    from nas.model.transformer import TransformerLM

    arch = hf_parent_arch(spec, seq_len)
    family = FAMILIES[read_hf_config(hf_parent_folder(spec), "parent").model_type]
    model = TransformerLM(arch)
    load_hf_weights(model, load_file(str(hf_parent_folder(spec) / "model.safetensors")), family, f"parent={spec}")
    return model.eval(), hf_parent_digest(spec)
