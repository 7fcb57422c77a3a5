"""ArchConfig: the one typed, validated description of a model that search, export and train share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from nas.checks import check_bool, check_int
from nas.profiles import reject_unknown

# The choice fields' types; each tuple of valid values is read from its Literal (validate() checks them at run time)
AttentionKind = Literal["dense", "local_global"]
Positions = Literal["rope", "learned"]
AttentionBackend = Literal["block", "flex"]
GateKind = Literal["none", "dynamic"]
GroupShare = Literal["kv", "qkv"]
SharingPattern = Literal["none", "all", "sequence", "cycle", "cycle_rev", "adjacent", "ffn_block_diag"]
SharingScope = Literal["attention", "ffn", "both"]
Fp8Format = Literal["fp8_e4m3", "fp8_e5m2"]
Format = Literal["fp32", "bf16", "fp16", Fp8Format]
FfnFormat = Literal[Format, "adaptive"]
FfnKind = Literal["gelu", "swiglu", "geglu"]

ATTENTION_KINDS: tuple[str, ...] = get_args(AttentionKind)
POSITIONS: tuple[str, ...] = get_args(Positions)
ATTENTION_BACKENDS: tuple[str, ...] = get_args(AttentionBackend)
GATE_KINDS: tuple[str, ...] = get_args(GateKind)
GROUP_SHARE: tuple[str, ...] = get_args(GroupShare)
SHARING_PATTERNS: tuple[str, ...] = get_args(SharingPattern)
SHARING_SCOPES: tuple[str, ...] = get_args(SharingScope)
FORMATS: tuple[str, ...] = get_args(Format)
FFN_FORMATS: tuple[str, ...] = get_args(FfnFormat)
FP8_FORMATS: tuple[str, ...] = get_args(Fp8Format)
FFN_KINDS: tuple[str, ...] = get_args(FfnKind)


class ConfigError(ValueError):
    """An ArchConfig field holds an invalid value: the message names the field, the value and what is valid."""

    def __init__(self, key: str, value: Any, valid: str) -> None:
        super().__init__(f"ArchConfig.{key}={value!r} is invalid: {valid}")
        self.key, self.value, self.valid = key, value, valid


def _fail(key: str, value: Any, valid: str) -> None:
    raise ConfigError(key, value, valid)


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(key, value, f"expected one of {', '.join(choices)}")


def _check_positive_int(key: str, value: Any) -> None:
    check_int(f"ArchConfig.{key}", value)


# ---- the knob registry: each field declares its role once; everything else reads it from here --------------------
ScaleRule = Literal["as_is", "context_share", "context_tokens", "count", "head_share", "layer_share", "layer_period",
                    "layer_positions", "width_divisor"]
KnobGroup = Literal["attention", "kernel", "heads", "sharing", "precision"]


@dataclass(frozen=True)
class Knob:
    """A knob's declaration on its ArchConfig field: what it belongs to, how it carries, when it applies, its bounds.

    group: what the knob changes (the adequacy check per group: attention, heads, sharing, precision; `kernel`
      knobs change how attention is computed, not which keys are seen). scale: the rule nas/knobs.py applies when
      the knob moves between sizes. applies: (field, values): the knob has a value only where that field holds one
      of the values, and is None elsewhere. unset: its value where it applies and is not given; required: it must
      be given there. low / at_most / below / divides: bounds, the last three naming a size field.
    """

    group: KnobGroup
    scale: ScaleRule = "as_is"
    applies: tuple[str, tuple[str, ...]] | None = None
    unset: Any = None
    required: bool = False
    low: int | None = None
    at_most: str | None = None
    below: str | None = None
    divides: str | None = None

    def applies_to(self, arch: Any) -> bool:
        """Whether the knob has a value in `arch` (an ArchConfig)."""
        return self.applies is None or getattr(arch, self.applies[0]) in self.applies[1]

    def condition(self) -> str:
        """Where the knob applies, as a setting (e.g. `attention=local_global`)."""
        return "" if self.applies is None else f"{self.applies[0]}={'|'.join(self.applies[1])}"


ROLE = "nas.role"  # field metadata key: "size" or a Knob


def size(default: Any) -> Any:
    """A size field: what a proxy, a reference or a target fixes."""
    return field(default=default, metadata={ROLE: "size"})


def knob(default: Any, **declaration: Any) -> Any:
    """A knob field with its declaration (see Knob)."""
    return field(default=default, metadata={ROLE: Knob(**declaration)})


FRACTIONAL_SHARING = ("sequence", "cycle", "cycle_rev")  # patterns whose M is a free knob
DIVISOR_SHARING = ("sequence", "cycle_rev")  # patterns that need M | L
_LOCAL = ("attention", ("local_global",))
LayerKind = Literal["local", "global"]


@dataclass(frozen=True)
class LayerAttention:
    """What one layer's attention sees: `global` = full causal attention (no window, no global tokens); `local` =
    the causal window plus the first `global_tokens` positions, mixed per head by the dynamic gate when `gated`."""

    kind: LayerKind
    window: int | None = None
    global_tokens: int = 0
    gated: bool = False


def _placement(value: Any) -> Any:
    """A global-layer placement as a sorted list of ints; a search space's categorical sample '1,3' is read too."""
    if isinstance(value, str):
        try:
            value = [int(part) for part in value.split(",")]
        except ValueError:
            return value  # validate() names it
    if isinstance(value, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        return sorted(value)
    return value


@dataclass
class PrecisionConfig:
    """Numeric format per layer type; `ffn` may also be `adaptive` (fp32 -> fp8 once the loss is stable)."""

    attention: Format = "fp32"
    ffn: FfnFormat = "fp32"
    embed: Format = "fp32"
    adaptive_format: Fp8Format = "fp8_e4m3"
    adaptive_window: int = 50
    adaptive_threshold: float = 0.01

    def validate(self) -> None:
        _check_choice("precision.attention", self.attention, FORMATS)
        _check_choice("precision.ffn", self.ffn, FFN_FORMATS)
        _check_choice("precision.embed", self.embed, FORMATS)
        _check_choice("precision.adaptive_format", self.adaptive_format, FP8_FORMATS)
        _check_positive_int("precision.adaptive_window", self.adaptive_window)
        if not (isinstance(self.adaptive_threshold, (int, float)) and self.adaptive_threshold > 0):
            _fail("precision.adaptive_threshold", self.adaptive_threshold, "expected a number > 0")


@dataclass
class ArchConfig:
    """A decoder-only causal LM and the value of every efficiency knob."""

    vocab_size: int = size(256)
    seq_len: int = size(256)
    n_layers: int = size(4)
    d_model: int = size(128)
    n_heads: int = size(4)
    head_dim: int | None = size(None)  # default d_model // n_heads
    ffn_mult: float = size(4.0)
    tie_embeddings: bool = size(True)
    positions: Positions = size("rope")  # rotary (RoFormer; relative, no table) or a learned table of seq_len rows
    # published-model features (Hugging Face config names where they differ): FFN kind and width, extra norms
    ffn: FfnKind = size("gelu")  # gelu: fc2(gelu(fc1 x)); swiglu / geglu: fc2(act(fc1 x) * fc3 x), act silu / gelu-tanh
    intermediate_size: int | None = size(None)  # FFN hidden width (HF intermediate_size); None = ffn_mult * d_model
    qk_norm: bool = size(False)  # RMSNorm over head_dim on each head's q and k before rotary (Qwen3, Gemma 3)
    post_norms: bool = size(False)  # RMSNorm on each sublayer's output before the residual add (Gemma 2/3)
    rope_theta: float = size(10000.0)  # rotary base (HF rope_theta); rope scaling (Llama 3, YaRN) is not modelled
    # attention: dense (SDPA) or causal sliding window + global tokens
    attention: AttentionKind = knob("dense", group="attention")
    backend: AttentionBackend = knob("block", group="kernel")
    window: int | None = knob(None, group="attention", scale="context_share", applies=_LOCAL, required=True, low=1,
                              at_most="seq_len")  # keys j visible to query i iff i - window < j <= i
    global_tokens: int | None = knob(None, group="attention", scale="count", applies=_LOCAL, unset=0, low=0,
                                     below="seq_len")  # the first G positions: every query sees them
    # per-layer layout (HF layer_types): which layers are global (full causal attention) instead of local; None:
    # every layer local (Mistral). A pattern: one global layer every k layers, the last of each group (HF
    # sliding_window_pattern; Gemma 3: 6); or an explicit placement: the global layers' indices (0-based)
    global_every: int | None = knob(None, group="attention", scale="layer_period", applies=_LOCAL, low=2,
                                    at_most="n_layers")
    global_layers: list[int] | None = knob(None, group="attention", scale="layer_positions", applies=_LOCAL)
    block_size: int = knob(0, group="kernel", low=0)  # query block of the block-local kernel; 0 picks one
    gate: GateKind = knob("none", group="attention")
    gate_threshold: float = knob(0.0, group="kernel")  # at inference, skip a branch whose gate is below this
    # head grouping: kv_heads groups; the heads of a group share K,V (kv) or Q,K,V (qkv)
    kv_heads: int | None = knob(None, group="heads", scale="head_share", low=1,
                                divides="n_heads")  # default n_heads (MHA); 1 = MQA
    group_share: GroupShare = knob("kv", group="heads")
    # layer sharing
    sharing: SharingPattern = knob("none", group="sharing")
    unique_layers: int | None = knob(None, group="sharing", scale="layer_share",  # M; None: the pattern's L // 2
                                     applies=("sharing", FRACTIONAL_SHARING), low=1, at_most="n_layers")
    sharing_scope: SharingScope | None = knob(None, group="sharing")  # None = the pattern's: ffn for ffn_block_diag
    ffn_blocks: int | None = knob(None, group="sharing", scale="width_divisor",  # k for ffn_block_diag
                                  applies=("sharing", ("ffn_block_diag",)), unset=4, low=1, divides="d_model")
    precision: PrecisionConfig = field(default_factory=PrecisionConfig, metadata={ROLE: Knob(group="precision")})

    def __post_init__(self) -> None:
        if self.sharing_scope is None:
            self.sharing_scope = "ffn" if self.sharing == "ffn_block_diag" else "both"
        if isinstance(self.precision, dict):
            self.precision = _from_dict(PrecisionConfig, self.precision, "precision.")
        self.global_layers = _placement(self.global_layers)
        for name, decl in KNOBS.items():  # a knob that does not apply is None; one that applies, unset, its default
            if not decl.applies_to(self):
                setattr(self, name, None)
            elif getattr(self, name) is None and decl.unset is not None:
                setattr(self, name, decl.unset)
        self.validate()

    # ---- derived sizes -------------------------------------------------------------
    @property
    def hd(self) -> int:
        """Head dimension."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def n_kv(self) -> int:
        """Number of K/V head groups."""
        return self.kv_heads if self.kv_heads is not None else self.n_heads

    @property
    def ffn_hidden(self) -> int:
        """FFN hidden width: intermediate_size, else ffn_mult * d_model rounded up to a multiple of ffn_blocks."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        hidden = int(round(self.ffn_mult * self.d_model))
        k = self.ffn_blocks or 1
        return ((hidden + k - 1) // k) * k

    @property
    def n_unique(self) -> int:
        """M: how many distinct layers the sharing pattern keeps."""
        if self.sharing in ("none", "ffn_block_diag"):
            return self.n_layers
        if self.sharing == "all":
            return 1
        if self.sharing == "adjacent":
            return (self.n_layers + 1) // 2
        return self.unique_layers if self.unique_layers is not None else max(1, self.n_layers // 2)

    def layer_attention(self, layer: int) -> LayerAttention:
        """The attention layer `layer` (0-based) runs: global (full causal) or local (window, global tokens, gate)."""
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} is outside 0..{self.n_layers - 1}")
        if self.attention == "dense":
            return LayerAttention("global")
        is_global = (self.global_every is not None and (layer + 1) % self.global_every == 0) or (
            self.global_layers is not None and layer in self.global_layers)
        if is_global:
            return LayerAttention("global")
        return LayerAttention("local", self.window, self.global_tokens or 0, self.gate == "dynamic")

    # ---- validation ------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the field, the value and what is valid."""
        for key in ("vocab_size", "seq_len", "n_layers", "d_model", "n_heads"):
            _check_positive_int(key, getattr(self, key))
        if self.head_dim is not None:
            _check_positive_int("head_dim", self.head_dim)
        elif self.d_model % self.n_heads:
            _fail("n_heads", self.n_heads, f"must divide d_model={self.d_model} (or set head_dim)")
        if not (isinstance(self.ffn_mult, (int, float)) and self.ffn_mult > 0):
            _fail("ffn_mult", self.ffn_mult, "expected a number > 0")
        _check_choice("positions", self.positions, POSITIONS)
        _check_choice("attention", self.attention, ATTENTION_KINDS)
        _check_choice("backend", self.backend, ATTENTION_BACKENDS)
        _check_choice("gate", self.gate, GATE_KINDS)
        _check_choice("group_share", self.group_share, GROUP_SHARE)
        _check_choice("sharing", self.sharing, SHARING_PATTERNS)
        _check_choice("sharing_scope", self.sharing_scope, SHARING_SCOPES)
        for name, decl in KNOBS.items():
            self._check_bounds(name, decl)
        self._check_layout()
        if self.gate == "dynamic" and self.attention != "local_global":
            _fail("gate", self.gate, "dynamic gate needs attention=local_global")
        if self.backend == "flex" and self.gate != "none":
            _fail("backend", self.backend, "flex supports gate=none only; use backend=block with the dynamic gate")
        if not (isinstance(self.gate_threshold, (int, float)) and 0.0 <= self.gate_threshold < 1.0):
            _fail("gate_threshold", self.gate_threshold, "expected a number in [0, 1)")
        if self.unique_layers is not None and self.sharing in DIVISOR_SHARING and self.n_layers % self.unique_layers:
            _fail("unique_layers", self.unique_layers, f"must divide n_layers={self.n_layers} for {self.sharing}")
        if self.sharing == "ffn_block_diag" and self.sharing_scope != "ffn":
            _fail("sharing_scope", self.sharing_scope, "ffn_block_diag shares FFN sub-blocks: use sharing_scope=ffn "
                  "(or leave it unset)")
        _check_choice("ffn", self.ffn, FFN_KINDS)
        if self.intermediate_size is not None:
            _check_positive_int("intermediate_size", self.intermediate_size)
        for key in ("qk_norm", "post_norms"):
            check_bool(f"ArchConfig.{key}", getattr(self, key))
        if isinstance(self.rope_theta, bool) or not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0):
            _fail("rope_theta", self.rope_theta, "expected a number > 0")
        if self.ffn_blocks is not None and self.ffn_hidden % self.ffn_blocks:
            _fail("ffn_blocks", self.ffn_blocks, f"must divide d_model={self.d_model} and the FFN width "
                  f"{self.ffn_hidden}")
        self.precision.validate()

    def _check_layout(self) -> None:
        """global_layers: distinct layer indices, not every layer; one of global_every and global_layers."""
        layers = self.global_layers
        if layers is None:
            return
        if not isinstance(layers, list) or not all(isinstance(i, int) and 0 <= i < self.n_layers for i in layers):
            _fail("global_layers", layers, f"expected a list of layer indices in 0..{self.n_layers - 1} "
                  "(or the string '1,3')")
        if len(set(layers)) != len(layers) or not layers:
            _fail("global_layers", layers, "expected distinct layer indices, at least one (None: no global layer)")
        if len(layers) == self.n_layers:
            _fail("global_layers", layers, "makes every layer global: use attention=dense")
        if self.global_every is not None:
            _fail("global_layers", layers, f"is a second layout beside global_every={self.global_every}: set one")

    def _check_bounds(self, name: str, decl: Knob) -> None:
        """A knob's declared bounds: the one check, and the one message, for each."""
        value = getattr(self, name)
        if value is None:
            if decl.required and decl.applies_to(self):
                _fail(name, value, f"required with {decl.condition()}")
            return
        if decl.low is not None and (isinstance(value, bool) or not isinstance(value, int) or value < decl.low):
            _fail(name, value, f"expected an integer >= {decl.low}")
        for bound, ok, words in ((decl.at_most, lambda n: value <= n, "must be <="),
                                 (decl.below, lambda n: value < n, "must be below"),
                                 (decl.divides, lambda n: n % value == 0, "must divide")):
            if bound is not None and not ok(getattr(self, bound)):
                _fail(name, value, f"{words} {bound}={getattr(self, bound)}")

    # ---- round trip ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchConfig":
        """Build from a plain dict; unknown keys raise ValueError naming them."""
        return _from_dict(cls, dict(data), "")

    def to_yaml(self, path: str | Path | None = None) -> str:
        """YAML text (written to `path` when given)."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ArchConfig":
        """Load from a YAML file."""
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of ArchConfig fields, got {type(data).__name__}")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "ArchConfig":
        """A validated copy with some fields changed."""
        data = self.to_dict()
        data.update(changes)
        return ArchConfig.from_dict(data)


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    reject_unknown(cls, data, f"ArchConfig.{prefix}", noun="field")
    return cls(**data)


SIZE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ArchConfig) if f.metadata.get(ROLE) == "size")
KNOBS: dict[str, Knob] = {f.name: f.metadata[ROLE] for f in dataclasses.fields(ArchConfig)
                          if isinstance(f.metadata.get(ROLE), Knob)}
KNOB_FIELDS: tuple[str, ...] = tuple(KNOBS)


def knobs_in(*groups: KnobGroup) -> tuple[str, ...]:
    """The knob fields of these groups (declaration order)."""
    return tuple(name for name, decl in KNOBS.items() if decl.group in groups)
