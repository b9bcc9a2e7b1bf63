"""Supernet presets: the channel plan of the OFAv2 MobileNetV3 and its small CPU variant.

Pure Python: the cost model reads the same config to count a subnet without building it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from natv2.errors import Natv2Error
from natv2.space import EXPANDS, KERNELS, MIN_RESOLUTION, RESOLUTIONS, WIDTHS
from natv2.untrusted import (
    MAX_CLASSES,
    MAX_RESOLUTION,
    Field,
    check_fields,
    read_float,
    short_int,
    shown,
)

# Per stage: stride, activation, squeeze-excite (docs/reference.md, "Stage plan of OFA
# MobileNetV3"). The strides and the stem's are OFA's ImageNet layout (total stride 32); a
# supernet trained from scratch on small images gets a layout fitted to them (``layout_for``).
STAGE_STRIDES: tuple[int, ...] = (2, 2, 2, 1, 2)
STEM_STRIDE = 2
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
    # the layout: strides of the stem and of the five stages, and the input resolutions the
    # supernet is trained at (the R gene's values); OFA's ImageNet layout by default
    stem_stride: int = STEM_STRIDE
    stage_strides: tuple[int, ...] = STAGE_STRIDES
    resolutions: tuple[int, ...] = RESOLUTIONS

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
        object.__setattr__(self, "stage_strides", tuple(int(v) for v in self.stage_strides))
        object.__setattr__(self, "resolutions", tuple(sorted({int(v) for v in self.resolutions})))
        strides = (self.stem_stride, *self.stage_strides)
        if len(self.stage_strides) != len(STAGE_STRIDES) or any(v not in (1, 2) for v in strides):
            raise Natv2Error(
                f"a supernet layout has a stem stride and {len(STAGE_STRIDES)} stage strides, "
                f"each 1 or 2; got {self.stem_stride} and {list(self.stage_strides)}"
            )
        sides = self.resolutions
        if not sides or not all(MIN_RESOLUTION <= r <= MAX_RESOLUTION for r in sides):
            raise Natv2Error(
                f"a supernet's resolutions are input sides of {MIN_RESOLUTION}.."
                f"{MAX_RESOLUTION} px, got {list(sides)}"
            )

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
            return self.stage_in_channels(stage), out, self.stage_strides[stage]
        return out, out, 1

    @property
    def total_stride(self) -> int:
        """How much smaller than the input the last stage's map is."""
        return self.stem_stride * math.prod(self.stage_strides)

    @property
    def layout(self) -> dict:
        """The layout fields (``layout_for`` gives them for a dataset)."""
        return {
            "stem_stride": self.stem_stride,
            "stage_strides": self.stage_strides,
            "resolutions": self.resolutions,
        }

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
        """JSON-ready: the layout's tuples as lists, as ``from_dict`` reads them back."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

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
        lists = {}
        for key in ("stage_strides", "resolutions"):
            if key in doc:
                items = doc[key]
                if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
                    raise Natv2Error(f"{source}: config {key!r} must list integers; {fix}")
                lists[key] = tuple(items)
        return cls(**{**doc, **numbers, **lists})


_CONFIG_SCHEMA = {
    "preset": Field(str, required=False),
    "width": Field((float, int), required=False),
    "num_classes": Field(int, required=False),
    "in_channels": Field(int, required=False),
    "parallel": Field(bool, required=False),
    "exits": Field(bool, required=False),
    "dense_skips": Field(bool, required=False),
    "dropout": Field((float, int), required=False),
    "stem_stride": Field(int, required=False),
    "stage_strides": Field((list, tuple), required=False),
    "resolutions": Field((list, tuple), required=False),
}

#: the last stage's map should keep at least this many pixels a side at the native size
_LAST_STAGE_PIXELS = 6
#: where strides go as a layout needs more of them: stages 2 and 3 first (a CIFAR ResNet's
#: full-resolution first stage), then the stem, stage 1 and stage 5 (OFA's ImageNet layout)
_STRIDE_ORDER = ("stage2", "stage3", "stem", "stage1", "stage5")


#: ``--layout``: ``data`` fits the strides and resolutions to the dataset's image size
#: (``layout_for``), ``imagenet`` is OFA's (the paper's, and what ``import-ofa`` weights have)
LAYOUTS: tuple[str, ...] = ("data", "imagenet")
#: what the main job trains: OFA's until a CPU schedule of the data layout beats it within the
#: main job's 10 minutes (docs/training-experiments.md, "Sandwich training in the data layout")
DEFAULT_LAYOUT = "imagenet"


def check_layout(name: str) -> str:
    """``name`` if it is a layout (``LAYOUTS``), else one clear error."""
    if name not in LAYOUTS:
        raise Natv2Error(f"unknown layout {shown(name)}; choose one of: {', '.join(LAYOUTS)}")
    return name


def layout_of(name: str, storage_size: int) -> dict:
    """The layout fields of ``--layout NAME`` for images stored at ``storage_size`` px."""
    if check_layout(name) == "data":
        return layout_for(storage_size)
    return {"stem_stride": STEM_STRIDE, "stage_strides": STAGE_STRIDES, "resolutions": RESOLUTIONS}


def layout_for(storage_size: int) -> dict:
    """The layout of a supernet trained from scratch on images stored at ``storage_size`` px.

    Why: OFA's layout (total stride 32, inputs 48-64 px) upsamples 28-px images 2-5x and
    still leaves the first stage at 12-16 px; a CIFAR ResNet keeps its input size through the
    first stage and halves it twice, which trains several times the images per second for the
    same accuracy (measurements: ``docs/training-experiments.md``). The total stride is the
    largest power of two that leaves the last stage at least ``_LAST_STAGE_PIXELS`` pixels at
    the native size (4 for 28-32 px, 8 for 64 px, 32 for 224 px: OFA's layout), the strides
    placed in ``_STRIDE_ORDER``. The five resolutions run from about 70 % of the native size up
    to it (20-28 px for 28-px images): an upsampled image holds no more information, and the
    largest resolution sets what the maximal subnet costs in every training step."""
    s = int(storage_size)
    total = 1
    while total < 32 and s // (2 * total) >= _LAST_STAGE_PIXELS:
        total *= 2
    strides = dict.fromkeys(_STRIDE_ORDER, 1)
    for place in _STRIDE_ORDER[: total.bit_length() - 1]:
        strides[place] = 2
    step = max(1, round(s / 14))
    resolutions = tuple(
        min(MAX_RESOLUTION, max(MIN_RESOLUTION, s - k * step)) for k in (4, 3, 2, 1, 0)
    )
    return {
        "stem_stride": strides["stem"],
        "stage_strides": (
            strides["stage1"],
            strides["stage2"],
            strides["stage3"],
            1,
            strides["stage5"],
        ),
        "resolutions": tuple(sorted(set(resolutions))),
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
