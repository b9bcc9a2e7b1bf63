"""Fuzz the CLI with malformed input (issue 12): a seeded generator, so every run tries the
same few hundred cases and a failure names the input that caused it.

Every case must end with exit 2, exactly one ``error:`` line on stderr, no traceback, and no
change to any file that was already in the target folder. Cases are malformed by construction
(each mutation breaks a rule the input boundary owns), and where a mutation could still be
valid (npz datasets) the command is pointed at a missing supernet, so it ends with exit 2
either way without training anything.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from natv2.space import SearchSpace
from natv2.supernet.checkpoint import SUPERNET_FORMAT
from natv2.supernet.config import SupernetConfig
from natv2.supernet.network import OFAv2Supernet

SEED = 12
ENCODING = "exits+parallel"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def check_all(cli, cases: list[tuple[str, list[str]]], folder: Path) -> None:
    """Run every case; report the first failures with the input that caused them."""
    before = snapshot(folder)
    failures = []
    for label, args in cases:
        res = cli(*args)
        lines = res.err.strip().splitlines()
        ok = (
            res.code == 2
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and "Traceback" not in res.err
            and "\x1b" not in res.err
        )
        if not ok:
            failures.append(f"{label}: exit {res.code}: {res.err[-600:]!r}")
    assert not failures, f"{len(failures)} of {len(cases)} failed:\n" + "\n".join(failures[:8])
    after = snapshot(folder)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"


# --------------------------------------------------------------------------- vectors


def malformed_vector(rng: random.Random, space: SearchSpace) -> str:
    genes = [str(int(v)) for v in space.encode(space.maximal())]
    lo, hi = space.lower, space.upper
    i = rng.randrange(len(genes))
    kind = rng.randrange(8)
    if kind == 0:  # beyond int64
        genes[i] = str(rng.choice([1, -1]) * 10 ** rng.randint(19, 60))
    elif kind == 1:  # just out of range
        genes[i] = str(int(hi[i]) + rng.randint(1, 10**6))
    elif kind == 2:
        genes[i] = str(int(lo[i]) - rng.randint(1, 10**6))
    elif kind == 3:  # wrong length
        genes = genes[: rng.randrange(len(genes))] if rng.random() < 0.5 else genes + ["1"] * 3
    elif kind == 4:  # not an integer
        genes[i] = rng.choice(["1.5", "x", "-", "0x1f", "1e3", "nan", "inf", "--", "1_000_000"])
    elif kind == 5:  # more digits than Python converts
        genes[i] = "9" * rng.randint(4301, 6000)
    elif kind == 6:  # control characters and odd separators
        genes[i] = rng.choice(["\x1b[31m1", "1\x00", "\t\n", "1;2", "\u202e7"])
    else:  # garbage text
        return "".join(rng.choice("0123456789,[]() -+.e\x07") for _ in range(rng.randint(0, 80)))
    return ",".join(genes)


def test_fuzz_encoding_vectors(cli, tmp_path):
    rng = random.Random(SEED)
    space = SearchSpace(ENCODING)
    cases = []
    for n in range(300):
        vector = malformed_vector(rng, space)
        verb = ("decode", "cost")[n % 2]
        cases.append((f"space {verb} {vector[:60]!r}", ["space", verb, vector, "-e", ENCODING]))
    check_all(cli, cases, tmp_path)


# --------------------------------------------------------------------------- profiles


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return (
            '"'
            + value.replace("\\", "\\\\")
            .replace('"', '\\"')
            .encode("ascii", "backslashreplace")
            .decode()
            .replace("\\x", "\\u00")
            + '"'
        )
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(doc: dict) -> str:
    top = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    tables = [
        f"[{k}]\n" + "\n".join(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())
        for k, v in doc.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top + tables) + "\n"


def base_profile() -> dict:
    return {
        "name": "fuzz",
        "description": "a fuzzed profile",
        "hardware": {
            "sram_bytes": 320_000,
            "flash_bytes": 1_000_000,
            "runtime_sram_bytes": 16_000,
            "dtype": "int8",
            "macs_per_second": 1.0e8,
            "safety_margin": 0.1,
        },
        "task": {"objectives": ["accuracy", "macs"], "target_latency_ms": 500},
        "budgets": {"max_params": 400_000},
    }


WRONG_TYPES = ["text", 1.5, True, [1, 2], {"a": 1}, -(10**30), 10**40]
NUMBER_KEYS = [
    ("hardware", "sram_bytes"),
    ("hardware", "flash_bytes"),
    ("hardware", "macs_per_second"),
    ("hardware", "safety_margin"),
    ("task", "target_latency_ms"),
    ("budgets", "max_params"),
    ("budgets", "max_macs"),
]


def malformed_profile(rng: random.Random) -> str:
    doc = base_profile()
    kind = rng.randrange(9)
    if kind == 0:  # unknown key
        table = rng.choice([None, "hardware", "task", "budgets"])
        (doc if table is None else doc[table])[rng.choice(["colour", "max_ram", "sram"])] = 1
    elif kind == 1:  # a number of the wrong type
        table, key = rng.choice(NUMBER_KEYS)
        doc[table][key] = rng.choice(WRONG_TYPES[:5])
    elif kind == 2:  # a number out of range
        table, key = rng.choice(NUMBER_KEYS)
        doc[table][key] = rng.choice(
            [0, -1, -0.5, float("nan"), float("inf"), 10 ** rng.randint(19, 80), 1e300]
        )
        if key == "safety_margin" and doc[table][key] == 0:
            doc[table][key] = 1.0
    elif kind == 3:  # text where a choice is expected
        key = rng.choice(["dtype", "latency"])
        doc["hardware"][key] = rng.choice(["int4", "", "estimate\x1b", "INT8", "fast"])
    elif kind == 4:  # objectives and resolutions
        doc["task"][rng.choice(["objectives", "resolutions"])] = rng.choice(
            [[], ["macs"], ["accuracy", "accuracy"], [3], [48, 48], ["accuracy", 3], "accuracy"]
        )
    elif kind == 5:  # a required key missing
        key = rng.choice(["name", "description", "dtype"])
        del (doc["hardware"] if key == "dtype" else doc)[key]
    elif kind == 6:  # control characters in names
        doc[rng.choice(["name", "description"])] = rng.choice(["\x1b[2J", "a\nb", "\x00", "\x07x"])
    elif kind == 7:  # deep nesting
        return "name = " + "[" * rng.randint(2000, 6000) + "]" * 10 + "\n"
    else:  # broken syntax
        text = to_toml(doc)
        cut = rng.randrange(len(text))
        return text[:cut] + rng.choice(["= = =", "[[[", '"', "\x00", "[budgets]\n[budgets]"])
    return to_toml(doc)


def test_fuzz_device_profiles(cli, tmp_path):
    rng = random.Random(SEED)
    space = SearchSpace(ENCODING)
    vector = ",".join(str(int(v)) for v in space.encode(space.minimal()))
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "keep.txt").write_text("an existing file")
    cases = []
    for n in range(200):
        path = folder / f"p{n}.toml"
        path.write_text(malformed_profile(rng), encoding="utf-8", errors="surrogateescape")
        args = (
            ["profiles", "show", str(path)]
            if n % 2
            else ["space", "cost", vector, "-e", ENCODING, "--device", str(path)]
        )
        cases.append((f"{path.name}: {path.read_text()[:80]!r}", args))
    check_all(cli, cases, folder)


# --------------------------------------------------------------------------- npz datasets


def malformed_npz(rng: random.Random, path: Path) -> None:
    n = 12
    arrays: dict[str, np.ndarray] = {
        "x": np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (n, 8, 8), np.uint8),
        "y": np.arange(n) % 3,
    }
    kind = rng.randrange(8)
    if kind == 0:
        arrays["x"] = arrays["x"].astype(rng.choice([np.float32, np.int64, bool, np.complex64]))
    elif kind == 1:
        arrays["x"] = np.zeros(
            rng.choice([(n,), (n, 8), (n, 8, 8, 2), (n, 0, 8), (0, 8, 8)]), np.uint8
        )
    elif kind == 2:
        y = arrays["y"].copy()
        y[rng.randrange(n)] = rng.choice([-1, 10**9, 2**62, 100_000, 7])
        arrays["y"] = y
    elif kind == 3:
        arrays["y"] = rng.choice(
            [
                np.zeros(n, int),
                np.arange(n) * 2,
                np.zeros(n),
                np.zeros((n, 1), int),
                np.arange(n - 1),
            ]
        )
    elif kind == 4:
        del arrays[rng.choice(["x", "y"])]
        if rng.random() < 0.5:
            arrays["x_val"] = np.zeros((3, 8, 8), np.uint8)
    elif kind == 5:
        arrays["y"] = np.array([object()] * n)
    elif kind == 6:  # not an npz at all
        path.write_bytes(
            rng.choice(
                [
                    bytes(rng.randrange(256) for _ in range(rng.randint(0, 400))),
                    b"PK\x03\x04" + b"\x00" * 40,
                    b"\x93NUMPY\x01\x00",
                ]
            )
        )
        return
    else:  # a valid archive, cut short
        np.savez(path, **arrays)  # type: ignore[arg-type]  # see the end of this function
        data = path.read_bytes()
        path.write_bytes(data[: rng.randrange(len(data))])
        return
    # numpy's stub types savez(**kwds) next to allow_pickle: bool, so mypy cannot tell that
    # these array names never bind allow_pickle
    np.savez(path, **arrays)  # type: ignore[arg-type]


def test_fuzz_npz_datasets(cli, tmp_path):
    rng = random.Random(SEED)
    folder = tmp_path / "data"
    folder.mkdir()
    cases = []
    for n in range(100):
        path = folder / f"d{n}.npz"
        malformed_npz(rng, path)
        args = [
            "search",
            "--dataset",
            f"npz:{path}",
            "--supernet",
            str(tmp_path / "missing.pt"),  # a valid archive ends here, before any training
            "--out",
            str(tmp_path / f"run{n}"),
            "--accelerator",
            "cpu",
        ]
        cases.append((path.name, args))
    check_all(cli, cases, folder)
    assert not list(tmp_path.glob("run*")), "a failed search left a run directory behind"


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def valid_checkpoint() -> dict:
    net = OFAv2Supernet(SupernetConfig())
    return {
        "format": SUPERNET_FORMAT,
        "supernets": [{"config": net.config.to_dict(), "state_dict": net.state_dict()}],
        "meta": {},
    }


def _mutate_config(rng: random.Random, config: dict) -> None:
    key, value = rng.choice(
        [
            ("num_classes", rng.choice([1, 0, -3, 10**30, "10", 2.5, None])),
            ("width", rng.choice([0.7, 0, -1.0, 10**400, "1.0", None, [1.0]])),
            ("preset", rng.choice(["huge", "", 3, None])),
            ("in_channels", rng.choice([0, 99, "3"])),
            ("dropout", rng.choice([5.0, -0.1, float("nan"), "0"])),
            ("parallel", rng.choice(["yes", 1, None])),
            ("unknown", 1),
        ]
    )
    config[key] = value


def malformed_checkpoint(rng: random.Random, valid: dict) -> object:
    entry: dict[str, Any] = {"config": dict(valid["supernets"][0]["config"]), "state_dict": {}}
    state = dict(valid["supernets"][0]["state_dict"])
    doc = {**valid, "supernets": [entry]}
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice([5, "natv2", None, [1, 2], 1.5, {"a": torch.zeros(2)}])
    if kind == 1:
        doc["format"] = rng.choice(["natv2-supernet/2", "", 7, None])
    elif kind == 2:
        doc["supernets"] = rng.choice([5, "x", {}, [], [7], [None], [{"config": {}}]])
    elif kind == 3:
        entry["config"] = rng.choice(["abc", 5, None, [1]])
    elif kind == 4:
        _mutate_config(rng, entry["config"])
    elif kind == 5:
        key = rng.choice(sorted(state))
        if rng.random() < 0.5:
            # torch accepts a missing BatchNorm counter (older checkpoints): drop a weight
            key = key if not key.endswith("num_batches_tracked") else key[:-19] + "weight"
            del state[key]
        else:
            state[key] = rng.choice([torch.zeros(3, 1, 7), "tensor", 5])
    elif kind == 6:
        key = rng.choice([k for k in sorted(state) if state[k].is_floating_point()])
        state[key] = torch.full_like(state[key], rng.choice([float("nan"), float("inf")]))
    else:
        doc["meta"] = rng.choice([5, "x", [1]])
    entry["state_dict"] = state if kind != 3 or rng.random() < 0.5 else rng.choice([5, "x"])
    if kind == 7:  # meta of the wrong type is the only fault: keep the rest valid
        entry["state_dict"] = state
    return doc


def test_fuzz_supernet_checkpoints(cli, tmp_path, valid_checkpoint):
    rng = random.Random(SEED)
    space = SearchSpace(ENCODING, widths=(1.0,))
    vector = ",".join(str(int(v)) for v in space.encode(space.minimal()))
    folder = tmp_path / "ckpts"
    folder.mkdir()
    cases = []
    for n in range(150):
        path = folder / f"c{n}.pt"
        torch.save(malformed_checkpoint(rng, valid_checkpoint), path)
        out = tmp_path / f"export{n}"
        cases.append(
            (path.name, ["export", "--supernet", str(path), "--arch", vector, "--out", str(out)])
        )
    check_all(cli, cases, folder)
    assert not list(tmp_path.glob("export*")), "a failed export left a folder behind"


def test_generators_are_seeded():
    """The same seed gives the same cases, so a failure can be replayed."""
    space = SearchSpace(ENCODING)
    assert malformed_vector(random.Random(SEED), space) == malformed_vector(
        random.Random(SEED), space
    )
    assert malformed_profile(random.Random(SEED)) == malformed_profile(random.Random(SEED))
