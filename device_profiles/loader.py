"""Reading device profiles: the TOML schema, its validation, and how budgets are derived.

A profile states the hardware (memory sizes, the runtime's own footprint, the number format, the
effective MAC/s of the runtime) and the task (objectives, input resolutions, a target latency);
budgets that are not written explicitly are derived from the hardware, so that a datasheet number
can be edited in one place. Every value is validated on load; a bad file raises ``Natv2Error``
naming the file, the key, what is allowed and how to fix it.

Schema (every table and key is listed in ``_SCHEMA``; unknown keys are errors)::

    name = "microcontroller-profile"        # required
    description = "..."                     # required, one line
    [hardware]
    processor = "Arm Cortex-M7"             # optional, informative
    clock_hz = 216_000_000                  # optional, informative
    sram_bytes = 327680                     # optional (big devices leave it out)
    flash_bytes = 1048576                   # optional
    runtime_sram_bytes = 16384              # optional, default 0: the runtime's own RAM
    runtime_flash_bytes = 102400            # optional, default 0: runtime code + framework
    dtype = "int8"                          # required: int8 | float16 | float32
    runtime = "tinyengine"                  # optional, default onnxruntime: what runs the model
                                            #   (tinyengine | tflm | onnxruntime | litert |
                                            #   pytorch); it decides which peak SRAM figure
                                            #   max_peak_sram_bytes is judged on (below)
    macs_per_second = 1.0e8                 # effective MAC/s of the runtime; required for
                                            #   latency = "estimate"
    safety_margin = 0.1                     # optional, default 0: fraction of memory kept free
    latency = "estimate"                    # estimate (MACs / macs_per_second) | measure
                                            #   (onnxruntime on this host); default estimate
    [task]
    objectives = ["accuracy", "macs"]       # accuracy first; then any of params, macs, flash,
                                            #   peak_sram, latency
    resolutions = [48, 52, 56]              # optional, default any the supernet has
    target_latency_ms = 500                 # optional
    max_top1_drop = 0.01                    # optional, default 0.01: how far an int8 file's
                                            #   test top-1 may fall below the float model's
                                            #   (a fraction; export and validate judge it)
    [budgets]                               # every key optional; explicit values win
    max_params / max_macs / max_flash_bytes / max_peak_sram_bytes / max_latency_ms

Derived budgets (only where the key is not written in ``[budgets]``):

- ``max_flash_bytes = floor((flash_bytes - runtime_flash_bytes) * (1 - safety_margin))``
- ``max_peak_sram_bytes = floor((sram_bytes - runtime_sram_bytes) * (1 - safety_margin))``
- ``max_macs = floor(target_latency_ms / 1000 * macs_per_second)`` (needs both)
- ``max_latency_ms = target_latency_ms``

Which figure ``max_peak_sram_bytes`` is judged on (``Profile.budget_pairs``, the one rule):
``runtime = "tflm"`` judges the TFLite Micro arena (``tflm_arena_bytes``: activations as TFLM's
greedy planner lays out the converted graph, plus TFLM's persistent part: tensor structs, node
structs, per-channel quantization data); every other runtime judges the MCUNet-style peak of
live activations (``peak_sram_bytes``). Likewise ``max_flash_bytes``: ``runtime = "tflm"`` judges
the int8 TFLite file that TFLM flashes (``tflite_bytes``, per-channel quantization records
included); every other runtime the deployed weights (``flash_bytes``).

Every number is range-checked (integers and numbers up to ``MAX_FIGURE`` = 10**18, far above any
device) and names are printable text, so a hostile file cannot reach a traceback or the terminal.

Standard library only: this package knows nothing of the rest of natv2 except its error type and
the untrusted-input readers (``natv2.untrusted``, standard library only too).
"""

from __future__ import annotations

import math
import tomllib
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

from natv2.device_profiles.profile import (
    BUDGET_KEYS,
    DEFAULT_MAX_TOP1_DROP,
    DTYPES,
    LATENCY_MODES,
    MAX_INPUT_SIDE,
    MIN_INPUT_SIDE,
    OBJECTIVES,
    RUNTIMES,
    Profile,
    format_figure,
)
from natv2.errors import Natv2Error
from natv2.untrusted import path_kind, read_float, read_int, shown

# Types: "str", "int" (integer, not bool), "num" (int or float, not bool), "strlist", "intlist".
_SCHEMA: dict[str, dict[str, str] | str] = {
    "name": "str",
    "description": "str",
    "hardware": {
        "processor": "str",
        "clock_hz": "int",
        "sram_bytes": "int",
        "flash_bytes": "int",
        "runtime_sram_bytes": "int",
        "runtime_flash_bytes": "int",
        "dtype": "str",
        "runtime": "str",
        "macs_per_second": "num",
        "safety_margin": "num",
        "latency": "str",
    },
    "task": {
        "objectives": "strlist",
        "resolutions": "intlist",
        "target_latency_ms": "num",
        "max_top1_drop": "num",
    },
    "budgets": dict.fromkeys(BUDGET_KEYS, "num"),
}
_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "num": "a number",
    "strlist": "a list of strings",
    "intlist": "a list of integers",
    "table": "a table",
}
_SUFFIX = "-profile"
#: the largest integer or number a profile may hold (bytes, MAC/s, budgets): no device is near it
MAX_FIGURE = 10**18


def _shipped_dir():
    return resources.files(__package__)


def list_profiles() -> list[str]:
    """Names of the shipped profiles (the TOML files beside this module), sorted."""
    names = [
        entry.name[: -len(".toml")]
        for entry in _shipped_dir().iterdir()
        if entry.name.endswith(".toml")
    ]
    return sorted(names)


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (``microcontroller-profile``, or ``microcontroller``) or a
    user's TOML file by path, validate it and resolve its budgets."""
    text_name = str(name_or_path)
    shipped = list_profiles()
    for candidate in (text_name, text_name + _SUFFIX):
        if candidate in shipped:
            entry = _shipped_dir().joinpath(candidate + ".toml")
            return _parse(entry.read_text(encoding="utf-8"), str(entry))
    path = Path(name_or_path)
    kind = path_kind(path)
    if kind == "file":
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Natv2Error(f"{shown(str(path))}: cannot read device profile: {exc}") from None
        return _parse(text, shown(str(path), limit=400))
    if kind != "missing":
        what = "a directory" if kind == "dir" else "not a regular file"
        raise Natv2Error(
            f"device profile '{shown(str(path))}' is {what}; give a TOML file or one of the "
            f"shipped profiles: {', '.join(shipped)}"
        )
    if path.suffix == ".toml" or "/" in text_name:
        raise Natv2Error(
            f"device profile file '{shown(str(path))}' does not exist; give an existing TOML "
            f"file or one of the shipped profiles: {', '.join(shipped)}"
        )
    raise Natv2Error(
        f"unknown device profile '{shown(text_name)}': shipped profiles are "
        f"{', '.join(shipped)}; or give the path to your own TOML file (see `natv2 profiles "
        "show NAME` for the schema)"
    )


def _exact(value: float) -> Fraction:
    """The decimal the TOML file wrote, exactly: floor() of the budget formulas must not lose 1
    to binary rounding (e.g. 10 * (1 - 0.7) = 2.9999999999999996 in floats)."""
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def _type_ok(value: Any, kind: str) -> bool:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:
        # an int is a number whatever its size (_check_range bounds it; float() of a
        # 400-digit int would overflow here)
        return is_int(v) or (isinstance(v, float) and math.isfinite(v))

    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return is_int(value)
    if kind == "num":
        return is_num(value)
    if kind == "strlist":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "intlist":
        return isinstance(value, list) and all(is_int(v) for v in value)
    raise AssertionError(kind)


def _check_schema(doc: dict[str, Any], src: str) -> None:
    for key, value in doc.items():
        if key not in _SCHEMA:
            raise Natv2Error(
                f"{src}: unknown key '{key}' at the top level; allowed: "
                f"{', '.join(_SCHEMA)}. Remove or rename it"
            )
        spec = _SCHEMA[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise Natv2Error(f"{src}: '{key}' must be a table ([{key}]), got {value!r}")
            for sub, subvalue in value.items():
                if sub not in spec:
                    raise Natv2Error(
                        f"{src}: unknown key '{key}.{sub}'; allowed in [{key}]: "
                        f"{', '.join(spec)}. Remove or rename it"
                    )
                if not _type_ok(subvalue, spec[sub]):
                    raise Natv2Error(
                        f"{src}: '{key}.{sub}' must be {_TYPE_WORDS[spec[sub]]}, got "
                        f"{shown(subvalue)} ({type(subvalue).__name__})"
                    )
                _check_range(f"{src}: '{key}.{sub}'", subvalue, spec[sub])
        elif not _type_ok(value, spec):
            raise Natv2Error(
                f"{src}: '{key}' must be {_TYPE_WORDS[spec]}, got {shown(value)} "
                f"({type(value).__name__})"
            )
        else:
            _check_range(f"{src}: '{key}'", value, spec)


def _check_range(name: str, value: Any, kind: str) -> None:
    """Numbers within +-MAX_FIGURE (signs are checked per key later); text printable."""
    if kind == "int":
        read_int(name, value, -MAX_FIGURE, MAX_FIGURE)
    elif kind == "num":
        read_float(name, value, -MAX_FIGURE, MAX_FIGURE)
    elif kind == "str" and shown(value, limit=len(value)) != value:
        raise Natv2Error(f"{name} must be printable text, got {shown(value)}")
    elif kind == "strlist":
        for item in value:
            _check_range(name, item, "str")


def _read_toml(text: str, src: str) -> dict[str, Any]:
    """The TOML document; a syntax error, an over-long integer or hostile nesting is one line
    naming the file, never a traceback."""
    try:
        return tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise Natv2Error(f"{src}: invalid TOML: {exc}; fix the syntax at that line") from None
    except RecursionError:
        raise Natv2Error(
            f"{src}: TOML nested too deeply to be a device profile; see `natv2 profiles show "
            "microcontroller-profile` for the schema"
        ) from None


def _check_identity(doc: dict[str, Any], src: str) -> None:
    """A profile is chosen and shown by its name and description: both must say something."""
    for key in ("name", "description"):
        if not doc.get(key, "").strip():
            raise Natv2Error(f"{src}: '{key}' is required (a non-empty string)")


def _hardware_modes(hw: dict[str, Any], src: str) -> tuple[str, str, str]:
    """The number format, the runtime and the latency model: ``(dtype, runtime, latency)``, each
    one of the values the rest of natv2 knows how to judge."""
    if "dtype" not in hw:
        raise Natv2Error(f"{src}: 'hardware.dtype' is required; allowed: {', '.join(DTYPES)}")
    if hw["dtype"] not in DTYPES:
        raise Natv2Error(
            f"{src}: 'hardware.dtype' = {hw['dtype']!r} is not supported; allowed: "
            f"{', '.join(DTYPES)}"
        )
    engine = hw.get("runtime", RUNTIMES[0])
    if engine not in RUNTIMES:
        raise Natv2Error(
            f"{src}: 'hardware.runtime' = '{shown(engine)}' is not supported; allowed: "
            f"{', '.join(RUNTIMES)} (tflm judges max_peak_sram_bytes on the TFLite Micro arena)"
        )
    latency = hw.get("latency", "estimate")
    if latency not in LATENCY_MODES:
        raise Natv2Error(
            f"{src}: 'hardware.latency' = {latency!r} is not allowed; use 'estimate' "
            "(MACs / macs_per_second) or 'measure' (onnxruntime on this host)"
        )
    return hw["dtype"], engine, latency


def _hardware_figures(hw: dict[str, Any], latency: str, src: str) -> float:
    """Sizes and rates positive, runtime footprints not negative, the safety margin a fraction
    and the MAC/s an estimated latency needs present. Returns the safety margin."""
    for key in ("sram_bytes", "flash_bytes", "clock_hz", "macs_per_second"):
        if key in hw and hw[key] <= 0:
            raise Natv2Error(f"{src}: 'hardware.{key}' must be > 0, got {hw[key]}")
    for key in ("runtime_sram_bytes", "runtime_flash_bytes"):
        if hw.get(key, 0) < 0:
            raise Natv2Error(f"{src}: 'hardware.{key}' must be >= 0, got {hw[key]}")
    margin = hw.get("safety_margin", 0.0)
    if not 0 <= margin < 1:
        raise Natv2Error(
            f"{src}: 'hardware.safety_margin' must be in [0, 1) (the fraction of memory kept "
            f"free), got {margin}"
        )
    if latency == "estimate" and "macs_per_second" not in hw:
        raise Natv2Error(
            f"{src}: 'hardware.latency' = 'estimate' needs 'hardware.macs_per_second' (the "
            "runtime's effective MAC/s); add it, or set latency = 'measure'"
        )
    return margin


def _check_runtime_memory(hw: dict[str, Any], src: str) -> None:
    """A runtime footprint needs the memory it sits in, and must leave some of it: otherwise
    the derived memory budget would be meaningless or <= 0."""
    for mem in ("sram", "flash"):
        runtime = hw.get(f"runtime_{mem}_bytes", 0)
        total = hw.get(f"{mem}_bytes")
        if total is None:
            if runtime:
                raise Natv2Error(
                    f"{src}: 'hardware.runtime_{mem}_bytes' is set but 'hardware.{mem}_bytes' "
                    f"is not; add the device's {mem} size or remove the runtime figure"
                )
            continue
        if runtime >= total:
            raise Natv2Error(
                f"{src}: 'hardware.runtime_{mem}_bytes' ({runtime}) is not smaller than "
                f"'hardware.{mem}_bytes' ({total}): the derived max_"
                f"{'peak_sram' if mem == 'sram' else 'flash'}_bytes would be <= 0. "
                "Fix the runtime figure or the memory size"
            )


def _objectives(task: dict[str, Any], src: str) -> list[str]:
    """The search's objectives: known ones, accuracy first, each once."""
    objectives = task.get("objectives", ["accuracy"])
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise Natv2Error(
            f"{src}: unknown objective(s) {', '.join(map(repr, bad))} in 'task.objectives'; "
            f"allowed: {', '.join(OBJECTIVES)}"
        )
    if not objectives or objectives[0] != "accuracy" or len(set(objectives)) != len(objectives):
        raise Natv2Error(
            f"{src}: 'task.objectives' = {objectives} must start with 'accuracy' and name each "
            'objective once, e.g. ["accuracy", "macs"]'
        )
    return objectives


def _resolutions(task: dict[str, Any], src: str) -> list[int] | None:
    """The input resolutions the device takes, at least one, each once; None (the default):
    any resolution the supernet has (its resolutions follow the dataset)."""
    if "resolutions" not in task:
        return None
    resolutions = task["resolutions"]
    bad = [r for r in resolutions if not MIN_INPUT_SIDE <= r <= MAX_INPUT_SIDE]
    if bad or not resolutions or len(set(resolutions)) != len(resolutions):
        raise Natv2Error(
            f"{src}: 'task.resolutions' = {shown(resolutions)} must be a non-empty list of "
            f"distinct input sides in {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE} px (or left out: any "
            "resolution the supernet has)"
        )
    return resolutions


def _target_latency(task: dict[str, Any], src: str) -> float | int | None:
    """The task's target latency (ms), positive, or None when the profile sets none."""
    target = task.get("target_latency_ms")
    if target is not None and target <= 0:
        raise Natv2Error(f"{src}: 'task.target_latency_ms' must be > 0, got {target}")
    return target


def _max_top1_drop(task: dict[str, Any], src: str) -> float:
    """How far a quantized file's top-1 may fall below float: a fraction in [0, 1]."""
    value = task.get("max_top1_drop", DEFAULT_MAX_TOP1_DROP)
    if not 0 <= value <= 1:
        raise Natv2Error(
            f"{src}: 'task.max_top1_drop' must be a fraction in 0..1 (0.01 = one point of "
            f"top-1), got {value}"
        )
    return float(value)


def _check_given_budgets(given: dict[str, Any], hw: dict[str, Any], src: str) -> None:
    """Budgets written in [budgets]: positive, and a memory budget within the memory."""
    for key, value in given.items():
        if value <= 0:
            raise Natv2Error(
                f"{src}: 'budgets.{key}' must be > 0, got {value}; remove the key to have no "
                "such budget (or to derive it from [hardware])"
            )
    for key, mem in (("max_flash_bytes", "flash_bytes"), ("max_peak_sram_bytes", "sram_bytes")):
        if key in given and mem in hw and given[key] > hw[mem]:
            raise Natv2Error(
                f"{src}: 'budgets.{key}' ({format_figure(given[key])}) exceeds 'hardware.{mem}' "
                f"({hw[mem]}); lower the budget or fix the memory size"
            )


def _derived_budgets(
    hw: dict[str, Any],
    given: dict[str, Any],
    margin: float,
    target: float | int | None,
    src: str,
) -> tuple[dict[str, float], dict[str, str]]:
    """The budgets [budgets] leaves out, derived from [hardware] and the target latency (the
    module docstring's formulas, in exact decimals), and the formula of each, filled in.
    A derived budget <= 0 is an error: it would make every subnet infeasible."""
    budgets: dict[str, float] = {}
    derived: dict[str, str] = {}
    for mem, key in (("flash", "max_flash_bytes"), ("sram", "max_peak_sram_bytes")):
        total = hw.get(f"{mem}_bytes")
        if key in given or total is None:
            continue
        runtime = hw.get(f"runtime_{mem}_bytes", 0)
        budgets[key] = math.floor((total - runtime) * (1 - _exact(margin)))
        derived[key] = (
            f"floor(({mem}_bytes {total} - runtime_{mem}_bytes {runtime}) "
            f"* (1 - safety_margin {margin:g}))"
        )
    if "max_macs" not in given and target is not None and "macs_per_second" in hw:
        rate = hw["macs_per_second"]
        budgets["max_macs"] = math.floor(_exact(target) / 1000 * _exact(rate))
        derived["max_macs"] = (
            f"floor(target_latency_ms {target:g} / 1000 * macs_per_second {rate:g})"
        )
    if "max_latency_ms" not in given and target is not None:
        budgets["max_latency_ms"] = float(target)
        derived["max_latency_ms"] = f"target_latency_ms {target:g}"
    for key, value in derived.items():
        if budgets[key] <= 0:
            raise Natv2Error(
                f"{src}: derived budget {key} = {format_figure(budgets[key])} is <= 0 "
                f"(from {value}); raise the inputs or write budgets.{key} explicitly"
            )
    return budgets, derived


def _parse(text: str, src: str) -> Profile:
    """A validated Profile from a profile's TOML text (``src`` names the file in errors). The
    checks run in one fixed order (schema, name, hardware, task, budgets), so a file with
    several problems always reports the same one first."""
    doc = _read_toml(text, src)
    _check_schema(doc, src)
    _check_identity(doc, src)
    hw: dict[str, Any] = doc.get("hardware", {})
    task: dict[str, Any] = doc.get("task", {})
    given: dict[str, Any] = doc.get("budgets", {})

    dtype, engine, latency = _hardware_modes(hw, src)
    margin = _hardware_figures(hw, latency, src)
    _check_runtime_memory(hw, src)
    objectives = _objectives(task, src)
    resolutions = _resolutions(task, src)
    target = _target_latency(task, src)
    max_drop = _max_top1_drop(task, src)
    _check_given_budgets(given, hw, src)
    budgets, derived = _derived_budgets(hw, given, margin, target, src)
    budgets.update(given)  # explicit values win
    ordered = {k: budgets[k] for k in BUDGET_KEYS if k in budgets}

    return Profile(
        name=doc["name"],
        description=doc["description"].strip(),
        source=src,
        dtype=dtype,
        latency=latency,
        runtime=engine,
        processor=hw.get("processor"),
        clock_hz=hw.get("clock_hz"),
        sram_bytes=hw.get("sram_bytes"),
        flash_bytes=hw.get("flash_bytes"),
        runtime_sram_bytes=hw.get("runtime_sram_bytes", 0),
        runtime_flash_bytes=hw.get("runtime_flash_bytes", 0),
        macs_per_second=float(hw["macs_per_second"]) if "macs_per_second" in hw else None,
        safety_margin=float(margin),
        objectives=tuple(objectives),
        resolutions=None if resolutions is None else tuple(resolutions),
        target_latency_ms=float(target) if target is not None else None,
        max_top1_drop=max_drop,
        budgets=ordered,
        derived_from={k: derived[k] for k in ordered if k in derived},
    )
