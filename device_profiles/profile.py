"""The device profile as a type: its budgets, and the one rule for what fits.

A ``Profile`` (``loader.load_profile`` builds it from TOML) owns every decision about fit: which
cost figure each budget judges (``budget_pairs``: the runtime decides which peak-SRAM and flash
figure), which latency the latency budget judges (``latency_basis``, ``judged_latency_ms``), and
the verdict on a subnet's ``Costs`` (``judge``). The search's constraints, ``space cost``,
``export`` and ``validate`` all ask it, so they cannot disagree.

Standard library only (and natv2's error type): this module knows nothing of torch or ONNX.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from natv2.errors import Natv2Error

DTYPES: tuple[str, ...] = ("int8", "float16", "float32")
LATENCY_MODES: tuple[str, ...] = ("estimate", "measure")
#: what runs the model on the device; the first is the default
RUNTIMES: tuple[str, ...] = ("onnxruntime", "tinyengine", "tflm", "litert", "pytorch")
#: runtime -> the cost key its SRAM budget is judged on (others: ``peak_sram_bytes``)
_SRAM_COST_KEYS: dict[str, str] = {"tflm": "tflm_arena_bytes"}
#: runtime -> the cost key its flash budget is judged on (others: ``flash_bytes``, the deployed
#: weights): TFLM flashes the int8 TFLite file itself, with its per-channel quantization records
_FLASH_COST_KEYS: dict[str, str] = {"tflm": "tflite_bytes"}
_TFLM_NOTE = " (runtime = tflm: TFLite Micro's arena, activations plus its persistent part)"
OBJECTIVES: tuple[str, ...] = ("accuracy", "params", "macs", "flash", "peak_sram", "latency")
#: the input sides a profile may restrict the search to (``task.resolutions``)
MIN_INPUT_SIDE = 4
MAX_INPUT_SIDE = 2048

#: objective name -> the cost key that measures it (accuracy is not a cost)
OBJECTIVE_COST_KEYS: dict[str, str] = {
    "params": "params",
    "macs": "macs",
    "flash": "flash_bytes",
    "peak_sram": "peak_sram_bytes",
    "latency": "latency_ms",
}
#: cost key -> budget key, in report order
COST_KEYS: dict[str, str] = {
    "params": "max_params",
    "macs": "max_macs",
    "flash_bytes": "max_flash_bytes",
    "peak_sram_bytes": "max_peak_sram_bytes",
    "latency_ms": "max_latency_ms",
}
BUDGET_KEYS: tuple[str, ...] = tuple(COST_KEYS.values())
#: how far a quantized file's test top-1 may fall below its float model's on the same images
#: (a fraction: 0.01 is one point), unless a profile sets ``task.max_top1_drop``
DEFAULT_MAX_TOP1_DROP = 0.01
#: fewest test images a quantized file's top-1 is judged on: with fewer, one image is more than
#: the tolerance and the check is named as not done instead of passed
MIN_TOP1_IMAGES = 200
#: the budget key a quantized file's top-1 is judged against (``Verdict.unchecked`` names it)
TOP1_DROP_KEY = "max_top1_drop"


@dataclass(frozen=True)
class Costs:
    """What one subnet costs, in the figures budgets are judged on; None where a figure is not
    known (a latency the profile measures, before the subnet is timed; a TFLM arena before the
    cost model or the converter gave one).

    ``peak_sram_bytes`` is the MCUNet-style peak of live activations (natv2's one name for peak
    memory); ``tflm_arena_bytes`` and ``tflite_bytes`` are TFLite Micro's own figures, which a
    ``runtime = "tflm"`` profile judges instead (``Profile.runtime_key``).
    """

    params: float | None = None
    macs: float | None = None
    flash_bytes: float | None = None
    peak_sram_bytes: float | None = None
    tflm_arena_bytes: float | None = None
    tflite_bytes: float | None = None
    latency_ms: float | None = None

    @classmethod
    def of(cls, figures: Mapping[str, Any]) -> Costs:
        """The cost figures of a subnet record or report (other keys, e.g. ``accuracy``, are
        not costs and are left out)."""
        return cls(**{f.name: figures.get(f.name) for f in fields(cls)})

    def get(self, key: str) -> float | None:
        """The figure of a cost key (``COST_KEYS``, ``tflm_arena_bytes``, ``tflite_bytes``)."""
        return getattr(self, key)


@dataclass(frozen=True)
class BudgetCheck:
    """One budget compared with one cost: ``passed`` when value <= budget."""

    name: str  # cost key, e.g. "peak_sram_bytes"
    budget_key: str  # e.g. "max_peak_sram_bytes"
    value: float
    budget: float
    passed: bool
    headroom: float  # budget - value (negative when over budget)
    headroom_fraction: float  # (budget - value) / budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "budget_key": self.budget_key,
            "value": self.value,
            "budget": self.budget,
            "passed": self.passed,
            "headroom": self.headroom,
            "headroom_fraction": self.headroom_fraction,
        }


@dataclass(frozen=True)
class QuantizedTop1:
    """A quantized file's test top-1 and its float model's, measured on the same images."""

    file: str  # e.g. "model.int8.onnx", "model.int8.tflite (TFLM)"
    float_top1: float
    top1: float
    images: int


@dataclass(frozen=True)
class Top1Check:
    """A quantized file against its float model: ``passed`` when top-1 fell by at most
    ``tolerance`` (a fraction) on the ``images`` test images both saw."""

    file: str
    float_top1: float
    top1: float
    images: int
    tolerance: float

    @property
    def drop(self) -> float:
        return self.float_top1 - self.top1

    @property
    def change_text(self) -> str:
        """``0.40 points lower`` / ``0.10 points higher`` / ``the same``."""
        if round(self.drop * self.images) == 0:
            return "the same"
        return f"{100 * abs(self.drop):.2f} points {'lower' if self.drop > 0 else 'higher'}"

    @property
    def passed(self) -> bool:
        # one image's worth of float rounding never decides it: compare counts of images
        return round(self.drop * self.images) <= round(self.tolerance * self.images)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "float_top1": self.float_top1,
            "top1": self.top1,
            "drop": self.drop,
            "images": self.images,
            "tolerance": self.tolerance,
            "passed": self.passed,
        }

    def describe(self) -> str:
        """One line: the figures and, when it failed, what to try."""
        head = (
            f"{self.file} top-1 {100 * self.top1:.2f} % against float {100 * self.float_top1:.2f} "
            f"% on {self.images} test images: {self.change_text} (at most "
            f"{100 * self.tolerance:.2f} points lower allowed)"
        )
        return head if self.passed else f"{head}; {QUANTIZATION_FIX}"


#: what a user can do about a quantized file that lost accuracy (printed with the failure)
QUANTIZATION_FIX = (
    "the int8 file is not fit to deploy: export again with more calibration images "
    "(--calibration-images), post-process the subnet (natv2 postprocess) before exporting, or "
    "choose another subnet of the front"
)


@dataclass(frozen=True)
class Verdict:
    """Whether a subnet fits a profile: one check per budget that had a figure to judge, the
    budgets that had none (named, never passed silently), what the latency budget judged, and
    (for a deployed quantized file) its top-1 against the float model's."""

    checks: tuple[BudgetCheck, ...]
    unchecked: tuple[str, ...]  # budget keys in force whose cost figure was not known
    latency_basis: str  # "estimate" (MACs / MAC/s) or "this host"
    top1_checks: tuple[Top1Check, ...] = ()

    @property
    def fits(self) -> bool:
        """Every budget that could be checked passed (``unchecked`` ones are not judged), and
        no quantized file lost more top-1 than the profile allows."""
        return all(c.passed for c in self.checks) and all(c.passed for c in self.top1_checks)

    @property
    def failed(self) -> tuple[BudgetCheck, ...]:
        """The budgets exceeded (a quantized file's lost accuracy is in ``failed_top1``)."""
        return tuple(c for c in self.checks if not c.passed)

    @property
    def failed_top1(self) -> tuple[Top1Check, ...]:
        return tuple(c for c in self.top1_checks if not c.passed)


@dataclass(frozen=True)
class Profile:
    """A validated device profile with its budgets resolved.

    ``budgets`` holds every budget in force (given or derived); ``derived_from`` maps each
    derived budget to the formula, with numbers, that produced it. Treat the dicts as read-only.
    """

    name: str
    description: str
    source: str
    dtype: str
    latency: str
    runtime: str = RUNTIMES[0]
    processor: str | None = None
    clock_hz: int | None = None
    sram_bytes: int | None = None
    flash_bytes: int | None = None
    runtime_sram_bytes: int = 0
    runtime_flash_bytes: int = 0
    macs_per_second: float | None = None
    safety_margin: float = 0.0
    objectives: tuple[str, ...] = ("accuracy",)
    resolutions: tuple[int, ...] | None = None  # None: any the supernet has
    target_latency_ms: float | None = None
    max_top1_drop: float = DEFAULT_MAX_TOP1_DROP
    budgets: dict[str, float] = field(default_factory=dict)
    derived_from: dict[str, str] = field(default_factory=dict)

    def allows_resolution(self, resolution: int) -> bool:
        """Whether the device takes inputs of ``resolution`` px (``task.resolutions``)."""
        return self.resolutions is None or resolution in self.resolutions

    def budget_origin(self, key: str) -> str:
        """``"given"`` (written in [budgets]) or ``"derived"``."""
        return "derived" if key in self.derived_from else "given"

    @property
    def latency_basis(self) -> str:
        """What the latency budget judges: ``estimate`` (MACs / MAC/s) or ``this host``."""
        return "estimate" if self.latency == "estimate" and self.macs_per_second else "this host"

    def judged_latency_ms(
        self, estimated_ms: float | None, measured_ms: float | None
    ) -> float | None:
        """The latency the budget judges (the one rule for the search, ``space cost``, export
        and validate): the MAC-based estimate when ``latency = "estimate"`` and one exists,
        else the time measured on this host (None when neither is known)."""
        if self.latency == "estimate" and estimated_ms is not None:
            return estimated_ms
        return measured_ms

    def estimate_latency_ms(self, macs: float) -> float | None:
        """Latency the runtime would take for ``macs`` at the profile's effective MAC/s; None
        when the profile gives no MAC/s (the only place that decides whether there is one)."""
        if not self.macs_per_second:
            return None
        return float(macs) / self.macs_per_second * 1000.0

    @property
    def sram_cost_key(self) -> str:
        """The cost key ``max_peak_sram_bytes`` is judged on: the runtime's own figure."""
        return _SRAM_COST_KEYS.get(self.runtime, "peak_sram_bytes")

    @property
    def flash_cost_key(self) -> str:
        """The cost key ``max_flash_bytes`` is judged on: what the runtime flashes."""
        return _FLASH_COST_KEYS.get(self.runtime, "flash_bytes")

    def runtime_key(self, cost_key: str) -> str:
        """The figure a cost is judged and optimised on for this runtime: peak SRAM and flash
        as the runtime itself needs them, every other cost as it is."""
        if cost_key == "peak_sram_bytes":
            return self.sram_cost_key
        if cost_key == "flash_bytes":
            return self.flash_cost_key
        return cost_key

    def objective_key(self, objective: str) -> str:
        """The subnet record key an objective is measured by (``accuracy`` is its own)."""
        if objective == "accuracy":
            return "accuracy"
        return self.runtime_key(OBJECTIVE_COST_KEYS[objective])

    def budget_pairs(self) -> list[tuple[str, str]]:
        """(cost key, budget key) of every budget in force, in report order: what decides fit,
        for the search's constraints, its feasibility check and export's verdict alike."""
        return [(self.runtime_key(c), b) for c, b in COST_KEYS.items() if b in self.budgets]

    def judge(self, costs: Costs, quantized: Sequence[QuantizedTop1] = ()) -> Verdict:
        """The verdict on ``costs``: every budget in force compared with the figure its runtime
        judges (``budget_pairs``); a budget whose figure is None is named as unchecked. Each
        ``quantized`` file's top-1 is judged against its float model's (``max_top1_drop``) when
        at least ``MIN_TOP1_IMAGES`` test images were measured, else named as unchecked."""
        checks = []
        unchecked = []
        top1_checks = tuple(
            Top1Check(q.file, q.float_top1, q.top1, q.images, self.max_top1_drop)
            for q in quantized
            if q.images >= MIN_TOP1_IMAGES
        )
        for cost_key, budget_key in self.budget_pairs():
            value = costs.get(cost_key)
            if value is None:
                unchecked.append(budget_key)
                continue
            budget = self.budgets[budget_key]
            checks.append(
                BudgetCheck(
                    name=cost_key,
                    budget_key=budget_key,
                    value=value,
                    budget=budget,
                    passed=value <= budget,
                    headroom=budget - value,
                    headroom_fraction=(budget - value) / budget,
                )
            )
        if len(top1_checks) < len(quantized):
            unchecked.append(TOP1_DROP_KEY)
        return Verdict(tuple(checks), tuple(unchecked), self.latency_basis, top1_checks)

    def to_dict(self) -> dict[str, Any]:
        """Everything ``profiles show --json`` prints."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "hardware": {
                "processor": self.processor,
                "clock_hz": self.clock_hz,
                "sram_bytes": self.sram_bytes,
                "flash_bytes": self.flash_bytes,
                "runtime_sram_bytes": self.runtime_sram_bytes,
                "runtime_flash_bytes": self.runtime_flash_bytes,
                "dtype": self.dtype,
                "runtime": self.runtime,
                "sram_judged_on": self.sram_cost_key,
                "flash_judged_on": self.flash_cost_key,
                "macs_per_second": self.macs_per_second,
                "safety_margin": self.safety_margin,
                "latency": self.latency,
            },
            "task": {
                "objectives": list(self.objectives),
                "resolutions": None if self.resolutions is None else list(self.resolutions),
                "target_latency_ms": self.target_latency_ms,
                "max_top1_drop": self.max_top1_drop,
            },
            "budgets": {
                key: {
                    "value": value,
                    "origin": self.budget_origin(key),
                    "from": self.derived_from.get(key),
                }
                for key, value in self.budgets.items()
            },
        }


def check_feasible(profile: Profile, cheapest: Costs) -> None:
    """Raise when even the cheapest subnet exceeds a budget.

    ``cheapest`` holds the smallest value any subnet of the search space achieves, each figure
    minimised on its own; the message names every budget broken and that smallest figure.
    """
    over = profile.judge(cheapest).failed
    if not over:
        return
    parts = [
        f"{c.budget_key} = {format_figure(c.budget)} but the smallest achievable {c.name} is "
        f"{format_figure(c.value)}{_TFLM_NOTE if c.name == 'tflm_arena_bytes' else ''}"
        for c in over
    ]
    raise Natv2Error(
        f"{profile.source}: no subnet of the search space can meet device profile "
        f"'{profile.name}': {'; '.join(parts)}. Raise these budgets (or the hardware figures "
        "they are derived from), or choose a larger device profile"
    )


def format_figure(value: float) -> str:
    """A budget or cost as the messages print it: integers without a decimal point."""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:g}"
    return f"{int(value)}"
