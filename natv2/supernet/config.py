"""Supernet presets: the channel plan of the OFAv2 MobileNetV3 and its small CPU variant.

Pure Python: the cost model reads the same config to count a subnet without building it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from natv2.errors import Natv2Error
from natv2.space import EXPANDS, KERNELS, WIDTHS
from natv2.untrusted import MAX_CLASSES, Field, check_fields, read_float, short_int, shown

# Per stage: stride, activation, squeeze-excite (docs/reference.md, "Stage plan of OFA
# MobileNetV3").
STAGE_STRIDES: tuple[int, ...] = (2, 2, 2, 1, 2)
STAGE_ACTS: tuple[str, ...] = ("relu", "relu", "hswish", "hswish", "hswish")
STAGE_SE: tuple[bool, ...] = (False, True, False, True, True)
EXIT_EXPAND = 6  # exit head: 1x1 conv to 6*C, pool, 1x1 conv to 8*C, linear
EXIT_MIX = 8
SE_REDUCTION = 4


def make_divisible(value: float, divisor: int = 8) -> int:
    """OFA's rounding of channel counts (never more than 10% below ``value``)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


@dataclass(frozen=True)
class PresetWidths:
    """Base channel counts at W = 1.0, scaled by the width multiplier."""

    stem: int
    stages: tuple[int, int, int, int, int]


PRESETS: dict[str, PresetWidths] = {
    "ofa-mbv3": PresetWidths(stem=16, stages=(24, 40, 80, 112, 160)),
    "tiny": PresetWidths(stem=8, stages=(8, 16, 24, 32, 40)),
}


@dataclass(frozen=True)
class SupernetConfig:
    """Everything needed to build one supernet (one width multiplier) or count its subnets."""

    preset: str = "tiny"
    width: float = 1.0
    num_classes: int = 10
    in_channels: int = 3
    parallel: bool = True
    exits: bool = True
    dense_skips: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise Natv2Error(
                f"unknown supernet preset {self.preset!r}; choose one of: {', '.join(PRESETS)}"
            )
        if self.width not in WIDTHS:
            raise Natv2Error(f"width multiplier {self.width} not in {WIDTHS}")
        if not 2 <= self.num_classes <= MAX_CLASSES or not 1 <= self.in_channels <= 4:
            raise Natv2Error(
                f"a supernet needs at least 2 classes (at most {MAX_CLASSES:,}) and 1..4 input "
                "channels, got "
                f"{short_int(self.num_classes)} classes and {short_int(self.in_channels)} channels"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise Natv2Error(f"supernet dropout must be in [0, 1), got {self.dropout}")

    @property
    def name(self) -> str:
        return f"{self.preset}-w{self.width:.1f}"

    @property
    def stem_channels(self) -> int:
        return make_divisible(PRESETS[self.preset].stem * self.width)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(make_divisible(c * self.width) for c in PRESETS[self.preset].stages)

    def stage_in_channels(self, stage: int) -> int:
        return self.stem_channels if stage == 0 else self.stage_channels[stage - 1]

    def level_io(self, stage: int, index: int) -> tuple[int, int, int]:
        """(in channels, out channels, stride) of level ``index`` (0-based) of ``stage``."""
        out = self.stage_channels[stage]
        if index == 0:
            return self.stage_in_channels(stage), out, STAGE_STRIDES[stage]
        return out, out, 1

    @staticmethod
    def mid_channels(in_channels: int, expand: int) -> int:
        return make_divisible(round(in_channels * expand))

    @staticmethod
    def se_channels(mid: int) -> int:
        return make_divisible(mid // SE_REDUCTION)

    def exit_channels(self, stage: int) -> tuple[int, int]:
        c = self.stage_channels[stage]
        return EXIT_EXPAND * c, EXIT_MIX * c

    @property
    def exit_stages(self) -> tuple[int, ...]:
        """0-based stages that carry an exit head."""
        return (0, 1, 2, 3, 4) if self.exits else (4,)

    @property
    def max_kernel(self) -> int:
        return max(KERNELS)

    @property
    def max_expand(self) -> int:
        return max(EXPANDS)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: object, source: str = "supernet config") -> SupernetConfig:
        """A config from JSON or checkpoint metadata: every field type-checked first."""
        fix = "the file was not written by natv2: retrain or re-export it"
        doc = check_fields(d, _CONFIG_SCHEMA, f"{source}: config", fix)
        unknown = sorted(set(doc) - set(_CONFIG_SCHEMA))
        if unknown:
            raise Natv2Error(
                f"{source}: config has unknown key(s) {', '.join(shown(k) for k in unknown)}; {fix}"
            )
        numbers = {
            key: read_float(f"{source}: config {key!r}", doc[key], 0.0, 10.0)
            for key in ("width", "dropout")
            if key in doc
        }
        return cls(**{**doc, **numbers})


_CONFIG_SCHEMA = {
    "preset": Field(str, required=False),
    "width": Field((float, int), required=False),
    "num_classes": Field(int, required=False),
    "in_channels": Field(int, required=False),
    "parallel": Field(bool, required=False),
    "exits": Field(bool, required=False),
    "dense_skips": Field(bool, required=False),
    "dropout": Field((float, int), required=False),
}


def encoding_of(config: SupernetConfig) -> str:
    """The encoding whose subnets this supernet can run."""
    if config.exits:
        return "exits+parallel" if config.parallel else "exits"
    return "parallel" if config.parallel else "baseline"


def config_for_encoding(encoding: str, **kwargs) -> SupernetConfig:
    """A config whose supernet runs exactly the subnets of ``encoding``."""
    return SupernetConfig(
        parallel="parallel" in encoding, exits=encoding.startswith("exits"), **kwargs
    )


def parse_supernet_name(name: str) -> tuple[str, tuple[float, ...]]:
    """``tiny`` → ("tiny", (1.0, 1.2)); ``ofa-mbv3-w1.0`` → ("ofa-mbv3", (1.0,))."""
    for preset in PRESETS:
        if name == preset:
            return preset, WIDTHS
        for w in WIDTHS:
            if name == f"{preset}-w{w:.1f}":
                return preset, (w,)
    names = [p for p in PRESETS] + [f"{p}-w{w:.1f}" for p in PRESETS for w in WIDTHS]
    raise Natv2Error(f"unknown supernet {name!r}; choose one of: {', '.join(names)}")
