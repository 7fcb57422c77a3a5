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


def _fail(key: str, value: Any, valid: str) -> None:
    raise ValueError(f"ArchConfig.{key}={value!r} is invalid: {valid}")


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(key, value, f"expected one of {', '.join(choices)}")


def _check_positive_int(key: str, value: Any) -> None:
    check_int(f"ArchConfig.{key}", value)


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

    vocab_size: int = 256
    seq_len: int = 256
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    head_dim: int | None = None  # default d_model // n_heads
    ffn_mult: float = 4.0
    tie_embeddings: bool = True
    positions: Positions = "rope"  # rotary (RoFormer; relative, no table) or a learned absolute table of seq_len rows
    # published-model features (Hugging Face config names where they differ): FFN kind and width, extra norms
    ffn: FfnKind = "gelu"  # gelu: fc2(gelu(fc1 x)); swiglu / geglu: fc2(act(fc1 x) * fc3 x), act silu / gelu-tanh
    intermediate_size: int | None = None  # FFN hidden width (HF intermediate_size); None = ffn_mult * d_model
    qk_norm: bool = False  # RMSNorm over head_dim on each head's q and k before rotary (Qwen3, Gemma 3)
    post_norms: bool = False  # RMSNorm on each sublayer's output before the residual add (Gemma 2/3)
    rope_theta: float = 10000.0  # rotary base (HF rope_theta); rope scaling (Llama 3, YaRN) is not modelled
    # attention: dense (SDPA) or causal sliding window + global tokens
    attention: AttentionKind = "dense"
    backend: AttentionBackend = "block"
    window: int = 64  # keys j visible to query i iff i - window < j <= i
    global_tokens: int = 0  # the first G positions: every query sees them
    block_size: int = 0  # query block of the block-local kernel; 0 picks one from the window
    gate: GateKind = "none"
    gate_threshold: float = 0.0  # at inference, skip a branch whose gate is below this
    # head grouping: kv_heads groups; the heads of a group share K,V (kv) or Q,K,V (qkv)
    kv_heads: int | None = None  # default n_heads (MHA); 1 = MQA
    group_share: GroupShare = "kv"
    # layer sharing
    sharing: SharingPattern = "none"
    unique_layers: int | None = None  # M; default depends on the pattern
    sharing_scope: SharingScope | None = None  # None = the pattern's own: ffn for ffn_block_diag, else both
    ffn_blocks: int = 4  # k for ffn_block_diag
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)

    def __post_init__(self) -> None:
        if self.sharing_scope is None:
            self.sharing_scope = "ffn" if self.sharing == "ffn_block_diag" else "both"
        if isinstance(self.precision, dict):
            self.precision = _from_dict(PrecisionConfig, self.precision, "precision.")
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
        k = self.ffn_blocks
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

    # ---- validation ------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the field, the value and what is valid."""
        for key in ("vocab_size", "seq_len", "n_layers", "d_model", "n_heads", "window", "ffn_blocks"):
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
        if not isinstance(self.global_tokens, int) or self.global_tokens < 0:
            _fail("global_tokens", self.global_tokens, "expected an integer >= 0")
        if self.global_tokens >= self.seq_len:
            _fail("global_tokens", self.global_tokens, f"must be below seq_len={self.seq_len}")
        if not isinstance(self.block_size, int) or self.block_size < 0:
            _fail("block_size", self.block_size, "expected an integer >= 0 (0 = automatic)")
        if self.gate == "dynamic" and self.attention != "local_global":
            _fail("gate", self.gate, "dynamic gate needs attention=local_global")
        if self.backend == "flex" and self.gate != "none":
            _fail("backend", self.backend, "flex supports gate=none only; use backend=block with the dynamic gate")
        if not (isinstance(self.gate_threshold, (int, float)) and 0.0 <= self.gate_threshold < 1.0):
            _fail("gate_threshold", self.gate_threshold, "expected a number in [0, 1)")
        if self.kv_heads is not None:
            _check_positive_int("kv_heads", self.kv_heads)
            if self.n_heads % self.kv_heads:
                _fail("kv_heads", self.kv_heads, f"must divide n_heads={self.n_heads}")
        if self.unique_layers is not None:
            _check_positive_int("unique_layers", self.unique_layers)
            if self.unique_layers > self.n_layers:
                _fail("unique_layers", self.unique_layers, f"must be <= n_layers={self.n_layers}")
            if self.sharing in ("sequence", "cycle_rev") and self.n_layers % self.unique_layers:
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
        if self.sharing == "ffn_block_diag" and (self.d_model % self.ffn_blocks or self.ffn_hidden % self.ffn_blocks):
            _fail("ffn_blocks", self.ffn_blocks, f"must divide d_model={self.d_model} and the FFN width "
                  f"{self.ffn_hidden}")
        self.precision.validate()

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
