"""Hostile but realistic input (issue 12): every case ends as exit 2 and one clear line.

Each case used to end in a Python traceback, an out-of-memory kill or a misleading message.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from natv2.supernet.checkpoint import SUPERNET_FORMAT, save_supernets
from natv2.supernet.config import SupernetConfig
from natv2.supernet.network import OFAv2Supernet

HUGE = "99999999999999999999999"
GOOD = "4,0,4," + ",".join(["9"] * 20)  # exits+parallel: R W X + 20 levels
HUGE_GENE = f"4,0,4,{HUGE}," + ",".join(["9"] * 19)


def one_clear_line(res, *needles: str) -> None:
    """Exit 2, exactly one 'error:' line on stderr, no traceback, every needle in it."""
    lines = res.err.strip().splitlines()
    assert res.code == 2, (res.code, res.err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err[-2000:]
    assert "Traceback" not in res.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """An untrained tiny supernet checkpoint (valid format; weights do not matter here)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_supernets(path, {1.0: OFAv2Supernet(SupernetConfig())})
    return path


def _profile(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\ndescription = "test"\n[hardware]\ndtype = "int8"\n'
        f"macs_per_second = 1e8\n{body}"
    )
    return path


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("verb", ["decode", "cost"])
def test_a_gene_too_large_for_int64_is_out_of_range(cli, verb):
    one_clear_line(cli("space", verb, HUGE_GENE), "position 4", "allowed range is")


def test_a_gene_too_large_for_int64_in_export_arch(cli, ckpt, tmp_path):
    res = cli("export", "--supernet", ckpt, "--arch", HUGE_GENE, "--out", tmp_path / "e")
    one_clear_line(res, "position 4", "allowed range is")
    assert not (tmp_path / "e").exists()


def test_absurd_class_counts_are_refused(cli):
    res = cli("space", "cost", GOOD, "--classes", "99999999999999999999")
    one_clear_line(res, "at most 100,000", "classes")
    one_clear_line(cli("space", "cost", GOOD, "--classes", "1"), "at least 2 classes")


def test_a_huge_integer_budget_in_a_profile(cli, tmp_path):
    path = _profile(tmp_path, "huge", f"[budgets]\nmax_params = {HUGE}\n")
    one_clear_line(cli("profiles", "show", path), "budgets.max_params", "out of range")
    one_clear_line(cli("space", "cost", GOOD, "--device", path), "budgets.max_params")
    res = cli("search", "--device", path, "--dataset", "digits", "--out", tmp_path / "run")
    one_clear_line(res, "budgets.max_params")
    assert not (tmp_path / "run").exists()


def test_a_400_digit_rate_in_a_profile(cli, tmp_path):
    """A float-typed key given an integer too large for a float (issue: OverflowError)."""
    path = tmp_path / "fast.toml"
    path.write_text(
        f'name = "fast"\ndescription = "test"\n[hardware]\ndtype = "int8"\n'
        f"macs_per_second = {'9' * 400}\n"
    )
    one_clear_line(cli("profiles", "show", path), "hardware.macs_per_second", "out of range")


def test_an_archive_of_a_billion_subnets_is_refused_before_any_work(cli, tmp_path):
    res = cli(
        "search", "--archive-size", "1000000000", "--dataset", "digits", "--out", tmp_path / "r"
    )
    one_clear_line(res, "--archive-size", "10000")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("option", ["--seed", "-n"])
def test_seeds_and_counts_out_of_range(cli, option):
    for value in ("-5", HUGE):
        one_clear_line(cli("space", "sample", option, value), option)


# --------------------------------------------------------------------------- names and files


def test_a_deeply_nested_toml_profile(cli, tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("name = " + "[" * 5000 + "]" * 5000 + "\n")
    one_clear_line(cli("profiles", "show", path), "deep.toml", "nested too deeply")


def test_a_profile_name_longer_than_the_file_system_allows(cli):
    one_clear_line(cli("profiles", "show", "a" * 300), "longer than the file system allows")


def test_a_directory_as_a_profile_or_checkpoint_is_said_to_be_one(cli, tmp_path):
    one_clear_line(cli("profiles", "show", tmp_path), "is a directory")
    res = cli("import-ofa", tmp_path, "--width", "1.0", "--out", tmp_path / "x.pt")
    one_clear_line(res, "is a directory")


def test_control_characters_never_reach_the_terminal(cli, tmp_path):
    res = cli("profiles", "show", "evil\x1b[31mname\x07")
    one_clear_line(res, "\\x1b[31m")
    assert "\x1b" not in res.err and "\x07" not in res.err
    path = _profile(tmp_path, "x", "")
    path.write_text(path.read_text().replace('name = "x"', 'name = "red\\u001b[31m"'))
    res = cli("profiles", "show", path)
    one_clear_line(res, "printable")
    assert "\x1b" not in res.err


def test_usage_errors_are_one_line(cli):
    one_clear_line(cli("space", "sample", "--bogus"), "--bogus")
    one_clear_line(cli("space", "sample", "-n", "many"), "-n")


# --------------------------------------------------------------------------- checkpoints


def _bad_checkpoints(tmp_path: Path) -> dict[str, Path]:
    docs = {
        "config-a-string": {
            "format": SUPERNET_FORMAT,
            "supernets": [{"config": "abc", "state_dict": {}}],
        },
        "config-field-types": {
            "format": SUPERNET_FORMAT,
            "supernets": [{"config": {"num_classes": "10"}, "state_dict": {}}],
        },
        "metadata-an-int": 5,
        "supernets-an-int": {"format": SUPERNET_FORMAT, "supernets": 5, "meta": 3},
        "entry-an-int": {"format": SUPERNET_FORMAT, "supernets": [7]},
    }
    paths = {}
    for name, doc in docs.items():
        paths[name] = tmp_path / f"{name}.pt"
        torch.save(doc, paths[name])
    return paths


@pytest.mark.parametrize(
    "name", ["config-a-string", "config-field-types", "metadata-an-int", "supernets-an-int"]
)
def test_checkpoint_metadata_of_the_wrong_type(cli, tmp_path, name):
    path = _bad_checkpoints(tmp_path)[name]
    out = tmp_path / "e"
    one_clear_line(cli("export", "--supernet", path, "--arch", GOOD, "--out", out), path.name)
    args = ["search", "--supernet", path, "--dataset", "digits", "--preset", "smoke"]
    one_clear_line(cli(*args, "--out", tmp_path / "run", "--accelerator", "cpu"), path.name)
    assert not out.exists() and not (tmp_path / "run").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_code_carrying_checkpoint_never_suggests_disabling_the_safety(cli, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": SUPERNET_FORMAT, "x": _Payload()}, path)
    res = cli("export", "--supernet", path, "--arch", GOOD, "--out", tmp_path / "e")
    one_clear_line(res, "evil.pt", "pickled Python object")
    assert "weights_only=False" not in res.err and "weights_only" not in res.err


def test_nan_weights_are_named_at_load_not_as_a_parity_failure(cli, tmp_path):
    net = OFAv2Supernet(SupernetConfig())
    with torch.no_grad():
        next(iter(net.parameters())).fill_(float("nan"))
    path = tmp_path / "nan.pt"
    save_supernets(path, {1.0: net})
    res = cli("export", "--supernet", path, "--arch", GOOD, "--out", tmp_path / "e")
    one_clear_line(res, "nan.pt", "NaN or infinite")
    assert "parity" not in res.err


def test_a_training_checkpoint_without_config(cli, tmp_path):
    out = tmp_path / "sn.pt"
    crafted = out.with_name(f"{out.name}.w1.0.train.pt")
    torch.save({"format": "natv2-train/1", "schedule": "test"}, crafted)
    before = crafted.read_bytes()
    res = cli(
        "train-supernet",
        "--supernet",
        "tiny-w1.0",
        "--dataset",
        "digits",
        "--schedule",
        "test",
        "--out",
        out,
        "--resume",
        "--accelerator",
        "cpu",
    )
    one_clear_line(res, crafted.name, "'config'")
    assert crafted.read_bytes() == before and not out.exists()


# --------------------------------------------------------------------------- data


def _npz(tmp_path: Path, name: str, **arrays) -> Path:
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def test_crafted_npz_files(cli, tmp_path):
    x = np.zeros((10, 8, 8), np.uint8)
    npy = tmp_path / "arr.npz"
    np.save(tmp_path / "arr.npy", x)
    os.replace(tmp_path / "arr.npy", npy)
    rand = tmp_path / "rand.npz"
    rand.write_bytes(np.random.default_rng(0).bytes(1000))
    cases = [
        (npy, "single .npy array"),
        (rand, "cannot read"),
        (_npz(tmp_path, "one", x=x, y=np.zeros(10, int)), "at least 2"),
        (_npz(tmp_path, "gap", x=x, y=np.arange(10) * 2), "no images of class"),
        (_npz(tmp_path, "obj", x=x, y=np.array([object()] * 10)), "Python objects"),
    ]
    for path, needle in cases:
        res = cli("search", "--dataset", f"npz:{path}", "--out", tmp_path / "run")
        one_clear_line(res, path.name, needle)
        assert "allow_pickle" not in res.err
        assert not (tmp_path / "run").exists()


def test_a_label_of_a_billion_exits_2_quickly_under_a_memory_limit(tmp_path):
    """One label of 10**9 made the loader build a billion class names (23.6 GB, OOM-killed).
    Here the process may grow by 300 MB at most, and must still exit 2 with one line."""
    labels = np.arange(20) % 4
    labels[3] = 10**9
    path = _npz(tmp_path, "billion", x=np.zeros((20, 8, 8), np.uint8), y=labels)
    script = textwrap.dedent(
        f"""
        import resource, sys
        import natv2.cli, natv2.data, natv2.pipeline, natv2.search  # imports before the limit
        size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        limit = size + 300 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        natv2.cli.main(["search", "--dataset", "npz:{path}", "--out", "{tmp_path / "run"}",
                        "--accelerator", "cpu"])
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "10**9" not in lines[0] and "billion.npz" in lines[0], lines
    assert "labels are class indices" in lines[0]


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but holds almost no data (the 400-megapixel
    image of the issue, without writing 400 megapixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory) -> Path:
    """A tiny classifier with dynamic height and width."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    path = tmp_path_factory.mktemp("onnx") / "dyn.onnx"
    torch.onnx.export(
        model.eval(),
        (torch.zeros(1, 3, 16, 16),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}, "logits": {0: "b"}},
        dynamo=False,
    )
    return path


def test_a_400_megapixel_png_in_an_image_folder(cli, tmp_path, dynamic_onnx):
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "data" / cls / f"{i}.png").write_bytes(_png_header(20000, 20000))
    res = cli(
        "validate",
        dynamic_onnx,
        "--device",
        "gpu-profile",
        "--resolution",
        "16",
        "--dataset",
        f"imagefolder:{tmp_path / 'data'}",
        "--runs",
        "1",
        "--warmup",
        "0",
    )
    one_clear_line(res, ".png", "too large")


def test_validate_with_an_absurd_resolution(cli, dynamic_onnx):
    for value in ("100000", "0", HUGE):
        res = cli("validate", dynamic_onnx, "--device", "gpu-profile", "--resolution", value)
        one_clear_line(res, "--resolution")


def test_validate_of_a_fixed_200000_px_input_is_refused_before_allocating(
    cli, dynamic_onnx, tmp_path
):
    """The issue's 1x3x200000x200000 input asked onnxruntime for 894 GiB."""
    import onnx

    model = onnx.load(str(dynamic_onnx))
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.Clear()
        d.dim_value = 200000
    path = tmp_path / "huge.onnx"
    onnx.save(model, str(path))
    res = cli("validate", path, "--device", "gpu-profile")
    one_clear_line(res, "200000", "2048")


def test_validate_library_bounds_the_resolution(dynamic_onnx):
    from natv2.errors import Natv2Error
    from natv2.export.validate import validate_onnx

    with pytest.raises(Natv2Error, match="out of range"):
        validate_onnx(dynamic_onnx, "gpu-profile", resolution=10**6, runs=1, warmup=0)


# --------------------------------------------------------------------------- search and file system


def test_out_that_is_a_regular_file(cli, ckpt, tmp_path):
    target = tmp_path / "file"
    target.write_text("mine")
    one_clear_line(cli("search", "--dataset", "digits", "--out", target), "is a file")
    res = cli("export", "--supernet", ckpt, "--arch", GOOD, "--out", target)
    one_clear_line(res, "is a file")
    assert target.read_text() == "mine"


def _deny_mkdir(monkeypatch, code: int) -> None:
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if "locked" in self.parts:
            raise OSError(code, os.strerror(code), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


@pytest.mark.parametrize(("code", "reason"), [(errno.EROFS, "read-only"), (errno.EACCES, "perm")])
def test_out_in_a_folder_that_cannot_be_written(cli, ckpt, tmp_path, monkeypatch, code, reason):
    _deny_mkdir(monkeypatch, code)
    out = tmp_path / "locked" / "run"
    args = ["search", "--supernet", ckpt, "--dataset", "digits", "--accelerator", "cpu"]
    one_clear_line(cli(*args, "--out", out), str(out), reason)
    res = cli("export", "--supernet", ckpt, "--arch", GOOD, "--out", out)
    one_clear_line(res, str(out), reason)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores modes")
def test_out_in_a_read_only_folder(cli, ckpt, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        res = cli("search", "--supernet", ckpt, "--dataset", "digits", "--out", folder / "run")
        one_clear_line(res, "permission denied")
    finally:
        folder.chmod(0o700)


# --------------------------------------------------------------------------- run directories

#: (the words before RUN_DIR, the options after it) of every verb that reads a run directory
VERBS_ON_A_RUN = {
    "postprocess": (["postprocess"], ["--subnet", "any", "--accelerator", "cpu"]),
    "predictors": (["predictors", "compare"], []),
    "export": (["export"], ["--subnet", "any"]),
}


@pytest.mark.parametrize("verb", VERBS_ON_A_RUN)
def test_a_run_dir_that_is_a_file_or_missing(cli, tmp_path, verb):
    before, after = VERBS_ON_A_RUN[verb]
    target = tmp_path / "file"
    target.write_text("mine")
    for path, why in [(target, "(a file)"), (tmp_path / "nowhere", "(no such folder)")]:
        res = cli(*before, path, *after)
        one_clear_line(res, str(path), why, "not a natv2 run directory", "give the --out folder")
    assert target.read_text() == "mine"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("verb", VERBS_ON_A_RUN)
def test_a_run_dir_name_longer_than_the_file_system_allows(cli, tmp_path, verb):
    before, after = VERBS_ON_A_RUN[verb]
    res = cli(*before, tmp_path / ("x" * 300), *after)
    one_clear_line(res, "cannot read", "longer than the file system allows")


# --------------------------------------------------------------------------- post-processing output


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _deny_files(monkeypatch, code: int) -> None:
    """Creating files in a folder named "locked" fails (what a read-only folder does to a
    non-root user; the tests run as root, which ignores modes)."""
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if "locked" in Path(kwargs.get("dir") or ".").parts:
            raise OSError(code, os.strerror(code), str(kwargs.get("dir")))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, ckpt) -> tuple[Path, str]:
    """A search run directory with one front subnet (an untrained supernet: nothing trains)."""
    from natv2.space import SearchSpace

    run = tmp_path_factory.mktemp("run")
    shutil.copy(ckpt, run / "supernet.pt")
    vector = [int(g) for g in GOOD.split(",")]
    arch = SearchSpace("exits+parallel").decode(vector)
    record = {"id": arch.id, "encoding": "exits+parallel", "vector": vector, "accuracy": 0.1}
    config = {"dataset": "digits", "encoding": "exits+parallel"}
    (run / "config.json").write_text(json.dumps(config))
    (run / "front.json").write_text(json.dumps([record]))
    return run, arch.id


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if the command gets as far as loading data or training."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the output folder must be refused before any slow work")

    monkeypatch.setattr("natv2.data.load_dataset", forbidden)
    monkeypatch.setattr("natv2.postprocess.postprocess_subnet", forbidden)


def _postprocess(cli, run_dir, *args):
    run, subnet = run_dir
    return cli("postprocess", run, "--subnet", subnet, "--accelerator", "cpu", *args)


def test_postprocess_out_that_is_a_regular_file(cli, run_dir, tmp_path, no_training):
    target = tmp_path / "file"
    target.write_text("mine")
    res = _postprocess(cli, run_dir, "--out", target)
    one_clear_line(res, f"--out {target} is a file", "give --out a folder")
    assert target.read_text() == "mine"


def test_postprocess_out_holding_other_files(cli, run_dir, tmp_path, no_training):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"my model")
    (folder / "notes.txt").write_text("my notes")
    res = _postprocess(cli, run_dir, "--out", folder)
    one_clear_line(res, str(folder), "notes.txt", "new or empty folder")
    assert snapshot(folder) == {"model.pt": b"my model", "notes.txt": b"my notes"}


@pytest.mark.parametrize(("code", "reason"), [(errno.EROFS, "read-only"), (errno.EACCES, "perm")])
def test_postprocess_out_that_cannot_be_created(
    cli, run_dir, tmp_path, monkeypatch, no_training, code, reason
):
    _deny_mkdir(monkeypatch, code)
    out = tmp_path / "locked" / "model"
    res = _postprocess(cli, run_dir, "--out", out)
    one_clear_line(res, str(out), reason, "choose another --out")
    assert not (tmp_path / "locked").exists()


@pytest.mark.parametrize(("code", "reason"), [(errno.EROFS, "read-only"), (errno.EACCES, "perm")])
def test_postprocess_out_in_a_folder_that_cannot_be_written(
    cli, run_dir, tmp_path, monkeypatch, no_training, code, reason
):
    _deny_files(monkeypatch, code)
    out = tmp_path / "locked"
    out.mkdir()
    res = _postprocess(cli, run_dir, "--out", out)
    one_clear_line(res, str(out), reason, "choose another --out")
    assert list(out.iterdir()) == []


def test_ctrl_c_during_postprocess_leaves_no_empty_folder(cli, run_dir, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("natv2.data.load_dataset", ctrl_c)
    interrupted_line(_postprocess(cli, run_dir))
    assert not (run_dir[0] / "postprocessed").exists()


# --------------------------------------------------------------------------- train-supernet output


def test_train_supernet_out_that_is_a_folder(cli, tmp_path, no_training):
    (tmp_path / "mine.txt").write_text("mine")
    res = cli("train-supernet", "--accelerator", "cpu", "--out", tmp_path)
    one_clear_line(res, f"--out {tmp_path} is a folder", "path of the supernet checkpoint")
    assert snapshot(tmp_path) == {"mine.txt": b"mine"}


@pytest.mark.parametrize(("code", "reason"), [(errno.EROFS, "read-only"), (errno.EACCES, "perm")])
def test_train_supernet_out_in_a_folder_that_cannot_be_written(
    cli, tmp_path, monkeypatch, no_training, code, reason
):
    _deny_mkdir(monkeypatch, code)
    out = tmp_path / "locked" / "supernet.pt"
    res = cli("train-supernet", "--accelerator", "cpu", "--out", out)
    one_clear_line(res, str(out.parent), reason, "choose another --out")
    assert not (tmp_path / "locked").exists()


# --------------------------------------------------------------------------- search run files


def test_evaluations_that_cannot_be_appended_to_are_one_line(tmp_path):
    """The search appends every evaluation to evaluations.jsonl; an unwritable file (here a
    folder in its place) is one line with the fix, not an OSError from deep in the search."""
    from types import SimpleNamespace

    from natv2.errors import Natv2Error
    from natv2.search import NATv2Search

    (tmp_path / "evaluations.jsonl").mkdir()
    search: Any = SimpleNamespace(  # a stand-in for NATv2Search
        acc=SimpleNamespace(is_main=True),
        run_dir=tmp_path,
        _scores={(4, 0): {"top1": 0.5, "loss": 1.0}},
    )
    with pytest.raises(Natv2Error, match=r"cannot append to .*evaluations\.jsonl: it is a dir"):
        NATv2Search._log_evaluations(search, [{"vector": [4, 0]}], "initial archive")


def test_a_front_plot_that_cannot_be_written_is_one_line_and_keeps_the_old_one(
    tmp_path, monkeypatch
):
    from types import SimpleNamespace

    import matplotlib.figure

    from natv2.errors import Natv2Error
    from natv2.search import plot_front

    def disk_full(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"half a png")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fname))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)
    path = tmp_path / "pareto.png"
    path.write_bytes(b"the previous plot")
    job: Any = SimpleNamespace(  # a stand-in for SearchJob
        objectives=("accuracy", "params"),
        objective_keys=("accuracy", "params"),
        profile=SimpleNamespace(name="p"),
        space=SimpleNamespace(encoding="e"),
    )
    records = [{"params": 10, "accuracy": 0.5}]
    with pytest.raises(Natv2Error, match=r"pareto\.png: no space left.*--resume"):
        plot_front(path, records, records, records, job)
    assert snapshot(tmp_path) == {"pareto.png": b"the previous plot"}
    monkeypatch.undo()
    plot_front(path, records, records, records, job)
    assert sorted(snapshot(tmp_path)) == ["pareto.png"]
    assert path.read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- Ctrl-C


def _ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


def interrupted_line(res) -> str:
    """Exit 130 and exactly one line on stderr, "interrupted: ...", no traceback."""
    lines = res.err.strip().splitlines()
    assert res.code == 130, (res.code, res.err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), res.err[-2000:]
    return lines[0]


@pytest.mark.parametrize("parser", ["TyperGroup", "TyperCommand"])
def test_ctrl_c_while_typer_parses_the_arguments(cli, monkeypatch, parser):
    """Ctrl-C before the command's own code runs, while typer parses the root's or the verb's
    arguments (typer turns that into a silent exit 130)."""
    import typer.core

    monkeypatch.setattr(getattr(typer.core, parser), "parse_args", _ctrl_c)
    interrupted_line(cli("space", "decode", GOOD))


def test_ctrl_c_inside_a_command(cli, monkeypatch, dynamic_onnx):
    monkeypatch.setattr("natv2.device_profiles.load_profile", _ctrl_c)
    interrupted_line(cli("validate", dynamic_onnx, "--device", "gpu-profile"))


# --------------------------------------------------------------------------- onnxruntime failures

#: what onnxruntime raises when an allocation fails (its text, C++ location included)
ORT_OUT_OF_MEMORY = (
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running "
    "Conv node. Name:'/0/Conv' Status Message: /onnxruntime_src/onnxruntime/core/framework/"
    "bfc_arena.cc:376 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, "
    "onnxruntime::Stream*, bool, onnxruntime::WaitNotificationFn) Failed to allocate memory "
    "for requested buffer of size 68451041280\n"
)
ORT_BAD_SHAPE = (
    "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running "
    "Reshape node. Name:'/Reshape' Status Message: /onnxruntime_src/onnxruntime/core/providers/"
    "cpu/tensor/reshape_helper.h:40 onnxruntime::ReshapeHelper::ReshapeHelper(const "
    "onnxruntime::TensorShape&, onnxruntime::TensorShapeVector&, bool) input_shape_size == "
    "size was false. The input tensor cannot be reshaped to the requested shape.\n"
)


def _ort_run_fails(monkeypatch, exc: BaseException, batches_over: int = 0) -> None:
    """``InferenceSession.run`` raises ``exc`` for inputs of more than ``batches_over`` images
    (instead of allocating tens of GiB to make onnxruntime fail for real)."""
    import onnxruntime as ort

    real = ort.InferenceSession.run

    def run(self, output_names, feed, *args, **kwargs):
        if next(iter(feed.values())).shape[0] > batches_over:
            raise exc
        return real(self, output_names, feed, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", run)


def _validate_at_the_largest_resolution(cli, model, *extra):
    from natv2.untrusted import MAX_RESOLUTION

    res = str(MAX_RESOLUTION)
    return cli("validate", model, "--device", "gpu-profile", "--resolution", res, *extra)


def _ort_exception(text: str) -> Exception:
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    return RuntimeException(text)


@pytest.mark.parametrize("kind", ["onnxruntime", "MemoryError"])
def test_validate_when_onnxruntime_runs_out_of_memory(cli, dynamic_onnx, monkeypatch, kind):
    exc = _ort_exception(ORT_OUT_OF_MEMORY) if kind == "onnxruntime" else MemoryError()
    _ort_run_fails(monkeypatch, exc)
    res = _validate_at_the_largest_resolution(cli, dynamic_onnx, "--runs", "1", "--warmup", "0")
    one_clear_line(
        res, str(dynamic_onnx), "ran out of memory", "1x3x2048x2048", "smaller --resolution"
    )
    if kind == "onnxruntime":
        one_clear_line(res, "68,451,041,280 bytes")
    assert "bfc_arena" not in res.err and "onnxruntime::" not in res.err


def test_validate_when_onnxruntime_cannot_run_the_model_at_that_size(
    cli, dynamic_onnx, monkeypatch
):
    _ort_run_fails(monkeypatch, RuntimeError(ORT_BAD_SHAPE))
    res = _validate_at_the_largest_resolution(cli, dynamic_onnx, "--runs", "1", "--warmup", "0")
    one_clear_line(
        res, "failed to run", "input_shape_size == size was false", "smaller --resolution"
    )
    assert "reshape_helper" not in res.err and "onnxruntime::" not in res.err


def test_validate_top1_at_the_largest_resolution(cli, dynamic_onnx, monkeypatch):
    """Top-1 prepares a few images at a time at 2048 x 2048 (48 MiB each, not a batch of 64
    in 3 GiB), and onnxruntime failing there is one line as well."""
    _ort_run_fails(monkeypatch, _ort_exception(ORT_OUT_OF_MEMORY), batches_over=1)
    extra = ["--dataset", "digits", "--limit", "8", "--runs", "1", "--warmup", "0"]
    res = _validate_at_the_largest_resolution(cli, dynamic_onnx, *extra)
    one_clear_line(res, "ran out of memory", "5x3x2048x2048", "smaller --resolution")


def test_only_verbs_with_resume_suggest_it(cli, monkeypatch, dynamic_onnx):
    import typer.core

    monkeypatch.setattr(typer.core.TyperCommand, "parse_args", _ctrl_c)
    for verb in (["search"], ["train-supernet"]):
        assert interrupted_line(cli(*verb)) == "interrupted: rerun with --resume to continue"
    for verb in (["--debug", "validate", dynamic_onnx], ["export"], ["space", "decode", GOOD]):
        assert interrupted_line(cli(*verb)) == "interrupted: run the command again"
