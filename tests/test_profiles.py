"""Device profiles: shipped files load, budgets derive as documented, bad files fail cleanly."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tomllib
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from natv2.cli import app, main
from natv2.device_profiles import (
    BUDGET_KEYS,
    Costs,
    Profile,
    check_feasible,
    list_profiles,
    load_profile,
)
from natv2.errors import Natv2Error

REQUIRED = {
    "microcontroller-profile",
    "mcu-nano-profile",
    "mcu-large-profile",
    "mobile-profile",
    "edge-profile",
    "gpu-profile",
}
NATV2 = Path(sys.executable).with_name("natv2")


def _run_main(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    assert isinstance(info.value.code, int)
    return info.value.code, out.out, out.err


def _write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = """
name = "tiny-board"
description = "a test board"
[hardware]
sram_bytes = 100000
flash_bytes = 500000
runtime_sram_bytes = 10000
runtime_flash_bytes = 100000
dtype = "int8"
macs_per_second = 3.0e7
safety_margin = 0.2
[task]
objectives = ["accuracy", "peak_sram"]
resolutions = [48, 64]
target_latency_ms = 250
[budgets]
"""


# ------------------------------------------------------------------ shipped profiles


def test_required_profiles_are_shipped():
    assert set(list_profiles()) >= REQUIRED


@pytest.mark.parametrize("name", list_profiles())
def test_every_shipped_profile_loads_and_derives_as_documented(name):
    prof = load_profile(name)
    assert isinstance(prof, Profile)
    assert prof.name == name
    assert prof.description and "\n" not in prof.description
    assert prof.objectives[0] == "accuracy"
    doc = tomllib.loads(Path(prof.source).read_text())
    hw, task, given = doc.get("hardware", {}), doc.get("task", {}), doc.get("budgets", {})
    margin = Fraction(str(hw.get("safety_margin", 0)))
    expected: dict[str, float] = {}
    if "flash_bytes" in hw:
        free = hw["flash_bytes"] - hw.get("runtime_flash_bytes", 0)
        expected["max_flash_bytes"] = math.floor(free * (1 - margin))
    if "sram_bytes" in hw:
        free = hw["sram_bytes"] - hw.get("runtime_sram_bytes", 0)
        expected["max_peak_sram_bytes"] = math.floor(free * (1 - margin))
    if "target_latency_ms" in task:
        expected["max_latency_ms"] = task["target_latency_ms"]
        if "macs_per_second" in hw:
            rate = Fraction(str(hw["macs_per_second"]))
            expected["max_macs"] = math.floor(Fraction(task["target_latency_ms"]) / 1000 * rate)
    expected.update(given)
    assert prof.budgets == expected
    for key in prof.budgets:
        assert prof.budget_origin(key) == ("given" if key in given else "derived")
    assert set(prof.derived_from) == set(expected) - set(given)


def test_microcontroller_budgets_by_hand():
    prof = load_profile("microcontroller-profile")
    # flash: floor((1048576 - 102400) * 0.9) = floor(851558.4) = 851558
    # SRAM:  floor((327680 - 16384) * 0.9)   = floor(280166.4) = 280166
    # MACs:  floor(500 ms / 1000 * 1.0e8)    = 50000000
    assert prof.budgets == {
        "max_macs": 50_000_000,
        "max_flash_bytes": 851_558,
        "max_peak_sram_bytes": 280_166,
        "max_latency_ms": 500.0,
    }
    assert prof.dtype == "int8" and prof.latency == "estimate"
    assert prof.sram_bytes == 327_680 and prof.flash_bytes == 1_048_576
    assert prof.estimate_latency_ms(5_000_000) == pytest.approx(50.0)
    assert "flash_bytes 1048576" in prof.derived_from["max_flash_bytes"]


def test_short_name_and_path_load_the_same_profile():
    by_name = load_profile("microcontroller-profile")
    assert load_profile("microcontroller") == by_name
    assert load_profile(by_name.source).budgets == by_name.budgets


def test_user_profile_derivation_and_explicit_override(tmp_path):
    prof = load_profile(_write(tmp_path, GOOD))
    # flash: floor((500000 - 100000) * 0.8) = 320000; SRAM: floor((100000 - 10000) * 0.8) = 72000
    # MACs:  floor(250 / 1000 * 3.0e7) = 7500000
    assert prof.budgets == {
        "max_macs": 7_500_000,
        "max_flash_bytes": 320_000,
        "max_peak_sram_bytes": 72_000,
        "max_latency_ms": 250.0,
    }
    assert prof.resolutions == (48, 64)
    over = load_profile(_write(tmp_path, GOOD + "max_flash_bytes = 123456\n", "over.toml"))
    assert over.budgets["max_flash_bytes"] == 123456
    assert over.budget_origin("max_flash_bytes") == "given"
    assert "max_flash_bytes" not in over.derived_from
    assert over.budget_origin("max_peak_sram_bytes") == "derived"


def test_check_reports_value_budget_and_headroom(tmp_path):
    prof = load_profile(_write(tmp_path, GOOD))
    verdict = prof.judge(Costs.of({"macs": 1_000_000, "peak_sram_bytes": 80_000, "accuracy": 0.9}))
    checks = {c.name: c for c in verdict.checks}
    assert set(checks) == {"macs", "peak_sram_bytes"}  # missing cost keys are skipped
    # ... and named, so a verdict never passes a budget it could not judge
    assert set(verdict.unchecked) == set(prof.budgets) - {"max_macs", "max_peak_sram_bytes"}
    assert not verdict.fits and verdict.failed == (checks["peak_sram_bytes"],)
    macs = checks["macs"]
    assert macs.passed and macs.budget == 7_500_000 and macs.headroom == 6_500_000
    assert macs.headroom_fraction == pytest.approx(6_500_000 / 7_500_000)
    sram = checks["peak_sram_bytes"]
    assert not sram.passed and sram.headroom == -8_000
    assert sram.budget_key == "max_peak_sram_bytes"


def test_check_feasible_names_budgets_and_smallest_figures(tmp_path):
    prof = load_profile(_write(tmp_path, GOOD))
    check_feasible(prof, Costs(macs=1_000_000, peak_sram_bytes=50_000, flash_bytes=10))
    with pytest.raises(Natv2Error) as info:
        check_feasible(
            prof, Costs(macs=9_000_000, peak_sram_bytes=99_999, flash_bytes=10, params=5)
        )
    msg = str(info.value)
    assert str(prof.source) in msg
    assert "max_macs = 7500000" in msg and "smallest achievable macs is 9000000" in msg
    assert "max_peak_sram_bytes = 72000" in msg and "99999" in msg
    assert "flash_bytes is" not in msg  # within budget: not named


def test_runtime_decides_which_figure_the_sram_budget_judges(tmp_path):
    """Shipped profiles name their runtime; a TFLM profile judges max_peak_sram_bytes on the
    TFLM arena (tflm_arena_bytes), every other runtime on the MCUNet-style peak."""
    expected = {
        "microcontroller-profile": "tinyengine",
        "mcu-large-profile": "tinyengine",
        "mcu-nano-profile": "tflm",
    }
    for name in list_profiles():
        prof = load_profile(name)
        assert prof.runtime == expected.get(name, prof.runtime) and prof.runtime
        assert prof.to_dict()["hardware"]["runtime"] == prof.runtime
        shipped = tomllib.loads(Path(prof.source).read_text())
        assert "runtime" in shipped["hardware"], name  # every shipped profile says which
    assert load_profile(_write(tmp_path, GOOD)).runtime == "onnxruntime"  # the default
    costs = Costs(peak_sram_bytes=50_000, tflm_arena_bytes=80_000)
    for runtime, passed, key in (("tinyengine", True, "peak_sram_bytes"), ("tflm", False, None)):
        text = GOOD.replace('dtype = "int8"', f'dtype = "int8"\nruntime = "{runtime}"')
        prof = load_profile(_write(tmp_path, text, f"{runtime}.toml"))
        checks = prof.judge(costs).checks
        (sram,) = [c for c in checks if c.budget_key == "max_peak_sram_bytes"]
        assert sram.passed is passed and sram.name == (key or "tflm_arena_bytes")
        assert ("tflm_arena_bytes", "max_peak_sram_bytes") in prof.budget_pairs() or passed
    with pytest.raises(Natv2Error, match="tflm_arena_bytes is 80000"):
        check_feasible(prof, replace(costs, macs=1))


# ------------------------------------------------------------------ CLI


def test_cli_profiles_list_and_json():
    runner = CliRunner()
    result = runner.invoke(app, ["profiles", "list"])
    assert result.exit_code == 0, result.output
    for name in REQUIRED:
        assert name in result.output
    result = runner.invoke(app, ["profiles", "list", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert {r["name"] for r in doc} == set(list_profiles())
    assert all(r["description"] for r in doc)


def test_cli_profiles_show_text_and_json(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["profiles", "show", "microcontroller-profile"])
    assert result.exit_code == 0, result.output
    assert "851,558" in result.output and "derived" in result.output
    assert "sram_bytes" in result.output and "accuracy, macs" in result.output

    path = _write(tmp_path, GOOD + "max_params = 200000\n")
    result = runner.invoke(app, ["profiles", "show", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["name"] == "tiny-board"
    assert doc["hardware"]["sram_bytes"] == 100000
    assert doc["task"]["objectives"] == ["accuracy", "peak_sram"]
    budgets = doc["budgets"]
    assert budgets["max_params"] == {"value": 200000, "origin": "given", "from": None}
    assert budgets["max_flash_bytes"]["origin"] == "derived"
    assert budgets["max_flash_bytes"]["value"] == 320000
    assert "runtime_flash_bytes 100000" in budgets["max_flash_bytes"]["from"]
    assert set(budgets) <= set(BUDGET_KEYS)


BAD_CASES = {
    "unknown_top_key": ('colour = "red"\n', ["'colour'", "allowed"]),
    "unknown_table_key": (
        GOOD.replace("[task]", "sram_kb = 320\n[task]"),
        ["'hardware.sram_kb'", "allowed in [hardware]"],
    ),
    "unknown_budget_key": (GOOD + "max_energy = 3\n", ["'budgets.max_energy'", "max_macs"]),
    "wrong_type": (
        GOOD.replace("flash_bytes = 500000", 'flash_bytes = "1MB"'),
        ["'hardware.flash_bytes'", "an integer"],
    ),
    "zero_budget": (GOOD + "max_macs = 0\n", ["'budgets.max_macs'", "> 0"]),
    "negative_budget": (GOOD + "max_params = -5\n", ["'budgets.max_params'", "> 0"]),
    "unknown_objective": (
        GOOD.replace('"peak_sram"]', '"energy"]'),
        ["'energy'", "task.objectives", "peak_sram"],
    ),
    "unknown_dtype": (
        GOOD.replace('dtype = "int8"', 'dtype = "int4"'),
        ["'hardware.dtype'", "int8, float16, float32"],
    ),
    "bad_resolution": (
        GOOD.replace("[48, 64]", "[48, 99999]"),
        ["'task.resolutions'", "4..2048 px"],
    ),
    "runtime_bigger_than_flash": (
        GOOD.replace("runtime_flash_bytes = 100000", "runtime_flash_bytes = 600000"),
        ["'hardware.runtime_flash_bytes'", "'hardware.flash_bytes'", "<= 0"],
    ),
    "derived_budget_zero": (
        GOOD.replace("macs_per_second = 3.0e7", "macs_per_second = 1.0"),
        ["derived budget max_macs = 0", "budgets.max_macs"],
    ),
    "invalid_toml": (GOOD.replace("[task]", "[task"), ["invalid TOML"]),
    "unknown_runtime": (
        GOOD.replace('dtype = "int8"', 'dtype = "int8"\nruntime = "cmsis"'),
        ["'hardware.runtime'", "'cmsis'", "onnxruntime, tinyengine, tflm, litert, pytorch"],
    ),
    "runtime_not_a_string": (
        GOOD.replace('dtype = "int8"', 'dtype = "int8"\nruntime = 3'),
        ["'hardware.runtime' must be a string"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_profile_exits_2_with_message(case, tmp_path, capsys):
    text, fragments = BAD_CASES[case]
    if case == "unknown_top_key":
        text = GOOD.replace('name = "tiny-board"', 'name = "tiny-board"\n' + text)
    path = _write(tmp_path, text, f"{case}.toml")
    with pytest.raises(Natv2Error):
        load_profile(path)
    code, out, err = _run_main(["profiles", "show", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert str(path) in err
    for fragment in fragments:
        assert fragment in err
    assert "Traceback" not in err


def test_unknown_profile_exits_2_naming_the_shipped_ones(capsys):
    code, _, err = _run_main(["profiles", "show", "toaster-profile"], capsys)
    assert code == 2
    assert "unknown device profile 'toaster-profile'" in err
    assert "microcontroller-profile" in err


def test_console_script_bad_profile_has_no_traceback(tmp_path):
    path = _write(tmp_path, GOOD + "max_macs = -1\n")
    proc = subprocess.run(
        [str(NATV2), "profiles", "show", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "'budgets.max_macs' must be > 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_profile_with_several_problems_reports_the_first_in_schema_order(tmp_path):
    """Hardware before task before budgets: a file with several problems always gives
    the same message (the loader's steps run in one fixed order)."""
    text = (
        GOOD.replace('dtype = "int8"', 'dtype = "int4"')
        .replace('"peak_sram"]', '"energy"]')
        .replace("[budgets]", "[budgets]\nmax_macs = 0")
    )
    with pytest.raises(Natv2Error, match=r"'hardware\.dtype' = 'int4'"):
        load_profile(_write(tmp_path, text))
    with pytest.raises(Natv2Error, match="unknown objective"):
        load_profile(_write(tmp_path, text.replace("int4", "int8"), "task.toml"))
    task_ok = text.replace("int4", "int8").replace('"energy"]', '"peak_sram"]')
    with pytest.raises(Natv2Error, match=r"'budgets\.max_macs' must be > 0"):
        load_profile(_write(tmp_path, task_ok, "budgets.toml"))
