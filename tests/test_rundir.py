"""A run directory belongs to one run, and a resume that cannot continue says so first (issue 12).

Searches here are the tiny smoke search on digits (seconds each).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from natv2 import rundir
from natv2.accelerator import resolve_accelerator
from natv2.device_profiles import load_profile
from natv2.pipeline import SearchRequest, run_search
from natv2.search import NATv2Search

INTERRUPTED = "interrupted: rerun with --resume to continue"


def _request(ckpt: Path) -> SearchRequest:
    return SearchRequest(supernet=str(ckpt), dataset="digits", preset="smoke", iterations=2)


def _args(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return [
        "search",
        "--supernet",
        str(ckpt),
        "--dataset",
        "digits",
        "--preset",
        "smoke",
        "--iterations",
        "2",
        "--accelerator",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, supernet_ckpt, digits) -> Path:
    out = tmp_path_factory.mktemp("a") / "run"
    profile = load_profile("microcontroller-profile")
    acc = resolve_accelerator("cpu")
    run_search(_request(supernet_ckpt), profile, digits, acc, out, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, supernet_ckpt, digits) -> Path:
    """A run killed after its first iteration was checkpointed (tests here must not change
    it: each asserts it is left byte-identical)."""
    out = tmp_path_factory.mktemp("b") / "run"
    profile = load_profile("microcontroller-profile")

    def killed(iteration: int) -> None:
        if iteration == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(
            _request(supernet_ckpt),
            profile,
            digits,
            resolve_accelerator("cpu"),
            out,
            log=lambda m: None,
            on_iteration=killed,
        )
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def one_line(res) -> str:
    lines = res.err.strip().splitlines()
    assert res.code == 2, (res.code, res.err[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err[-3000:]
    assert "Traceback" not in res.err
    return lines[0]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the command loads data or starts a search or a pretraining."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the run directory was checked")

    monkeypatch.setattr("natv2.data.load_dataset", forbidden)
    monkeypatch.setattr("natv2.pipeline.run_search", forbidden)
    monkeypatch.setattr("natv2.pipeline.pretrain", forbidden)


# --------------------------------------------------------------------------- resume and options


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (("--dataset", "mnist5k"), "--dataset"),
        (("--device", "edge-profile"), "--device"),
        (("--archive-size", "8"), "--archive-size"),
        (("--iterations", "3"), "--iterations"),
        (("--seed", "1"), "--seed"),
        (("--encoding", "exits"), "--encoding"),
        (("--predictor", "ridge"), "--predictor"),
    ],
)
def test_a_changed_option_is_refused_before_any_training(
    cli, supernet_ckpt, interrupted, no_work, extra, flag
):
    before = snapshot(interrupted)
    args = _args(supernet_ckpt, interrupted, "--resume")
    # the later of two repeated options wins, as typer parses them
    res = cli(*args, *extra)
    line = one_line(res)
    assert flag in line and "was searched with other options" in line, line
    assert "--accelerator" in line  # says what may change
    assert "searching" not in res.err and "training" not in res.err and res.out == ""
    assert snapshot(interrupted) == before


def test_a_changed_profile_file_is_refused_on_resume(cli, tmp_path, supernet_ckpt, digits):
    profile_path = tmp_path / "p.toml"
    shutil.copy(load_profile("microcontroller-profile").source, profile_path)
    out = tmp_path / "run"
    req = SearchRequest(
        device=str(profile_path), supernet=str(supernet_ckpt), dataset="digits", preset="smoke"
    )
    acc = resolve_accelerator("cpu")
    run_search(req, load_profile(profile_path), digits, acc, out, log=lambda m: None)
    text = profile_path.read_text()
    profile_path.write_text(text.replace('description = "', 'description = "edited: ', 1))
    args = ["search", "--device", profile_path, "--supernet", supernet_ckpt, "--dataset", "digits"]
    line = one_line(cli(*args, "--preset", "smoke", "--out", out, "--resume"))
    assert "--device" in line and "content changed" in line


def test_resume_on_a_folder_that_is_not_a_run_touches_nothing(cli, tmp_path, supernet_ckpt):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "front.json").write_text('{"my": "own front"}')
    (mine / "supernet.pt").write_bytes(b"my own weights")
    before = snapshot(mine)
    line = one_line(cli(*_args(supernet_ckpt, mine, "--resume")))
    assert "not a natv2 run directory" in line
    assert snapshot(mine) == before and sorted(os.listdir(mine)) == ["front.json", "supernet.pt"]


def test_a_fresh_search_into_a_folder_with_other_files_refuses(cli, tmp_path, supernet_ckpt):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    before = snapshot(mine)
    line = one_line(cli(*_args(supernet_ckpt, mine)))
    assert "not empty" in line
    assert snapshot(mine) == before and os.listdir(mine) == ["notes.txt"]


def test_a_fresh_search_into_an_interrupted_run_refuses(cli, supernet_ckpt, interrupted, no_work):
    before = snapshot(interrupted)
    line = one_line(cli(*_args(supernet_ckpt, interrupted)))
    assert "interrupted search" in line and "--resume" in line
    assert snapshot(interrupted) == before


def test_resume_with_nothing_to_resume_says_so(cli, tmp_path, supernet_ckpt, no_work):
    line = one_line(cli(*_args(supernet_ckpt, tmp_path / "nowhere", "--resume")))
    assert "holds no search to continue" in line
    assert not (tmp_path / "nowhere").exists()


def test_a_crafted_search_checkpoint_without_iteration(
    cli, tmp_path, monkeypatch, supernet_ckpt, interrupted
):
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    last = sorted((run / "checkpoints").glob("iter-*.pt"))[-1]
    doc = torch.load(last, weights_only=True)
    del doc["iteration"]
    torch.save(doc, last)
    before = snapshot(run)
    with monkeypatch.context() as m:
        m.setattr("natv2.data.load_dataset", lambda *a, **k: pytest.fail("data loaded"))
        line = one_line(cli(*_args(supernet_ckpt, run, "--resume")))
    assert last.name in line and "'iteration'" in line
    assert snapshot(run) == before


# --------------------------------------------------------------------------- the lock


def test_a_second_search_into_a_locked_run_exits_2_naming_the_holder(
    cli, supernet_ckpt, interrupted, no_work
):
    before = snapshot(interrupted)
    with rundir.RunLock(interrupted, command="test holder"):
        line = one_line(cli(*_args(supernet_ckpt, interrupted, "--resume")))
        assert "in use by another search" in line
        assert "test holder" in line and f"pid {os.getpid()}" in line
        with pytest.raises(Exception, match="in use by another search"):  # the API too
            rundir.RunLock(interrupted).__enter__()
    assert not (interrupted / rundir.LOCK).exists()
    assert snapshot(interrupted) == before


def test_a_lock_file_left_by_a_killed_search_does_not_block(tmp_path):
    """SIGKILL leaves the lock file but the kernel drops the flock: the folder is free."""
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.LOCK).write_text("natv2 search, pid 999999 (killed)\n")
    assert rundir.lock_holder(run) is None
    with rundir.RunLock(run):
        assert rundir.lock_holder(run) is not None
    assert rundir.lock_holder(run) is None and not (run / rundir.LOCK).exists()


def test_a_finished_run_leaves_no_lock(uninterrupted):
    assert not (uninterrupted / rundir.LOCK).exists()


# --------------------------------------------------------------------------- interruption


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _last_checkpoint(run: Path) -> dict:
    return torch.load(sorted((run / "checkpoints").glob("iter-*.pt"))[-1], weights_only=True)


def test_ctrl_c_mid_iteration_then_resume_gives_the_same_front_and_no_duplicates(
    cli, tmp_path, monkeypatch, supernet_ckpt, uninterrupted
):
    out = tmp_path / "run"
    adapt = NATv2Search.adapt

    def ctrl_c_in_iteration_2(self, iteration):
        if iteration == 2:  # candidates are evaluated and logged, nothing checkpointed
            raise KeyboardInterrupt
        adapt(self, iteration)

    monkeypatch.setattr(NATv2Search, "adapt", ctrl_c_in_iteration_2)
    res = cli(*_args(supernet_ckpt, out))
    assert res.code == 130
    assert res.err.strip().splitlines()[-1] == INTERRUPTED and "Traceback" not in res.err
    assert not (out / rundir.LOCK).exists()
    logged = len(_records(out / rundir.EVALUATIONS))
    assert logged > _last_checkpoint(out)["evaluations"]  # the interrupted iteration's records

    monkeypatch.setattr(NATv2Search, "adapt", adapt)
    res = cli(*_args(supernet_ckpt, out, "--resume", "--json"))
    assert res.code == 0, res.err[-3000:]
    for name in ("archive.jsonl", "front.json", "high_tradeoff.json", "evaluations.jsonl"):
        assert (out / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    evaluations = _records(out / rundir.EVALUATIONS)
    assert len(evaluations) == _last_checkpoint(out)["evaluations"] == res.json()["evaluations"]


def test_a_full_disk_during_a_checkpoint_is_one_line_and_resume_works(
    cli, tmp_path, monkeypatch, supernet_ckpt, uninterrupted
):
    out = tmp_path / "run"
    save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("iteration") == 2:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing "
                "file data/3: file write failed"
            )
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    res = cli(*_args(supernet_ckpt, out))
    line = res.err.strip().splitlines()[-1]  # after the progress bars
    assert res.code == 2 and "Traceback" not in res.err, res.err[-3000:]
    assert line.startswith("error: cannot write") and "iter-002.pt" in line and "disk full" in line
    assert not list((out / "checkpoints").glob(".*"))  # no temp file left behind
    monkeypatch.setattr(torch, "save", save)
    res = cli(*_args(supernet_ckpt, out, "--resume"))
    assert res.code == 0, res.err[-3000:]
    for name in ("front.json", "evaluations.jsonl"):
        assert (out / name).read_bytes() == (uninterrupted / name).read_bytes(), name


def test_numpy_and_torch_values_write_as_plain_json(tmp_path):
    """Arrays of any size and numpy/torch scalars go to JSON as lists and numbers, in records,
    reports and ``--json`` output alike (one default: ``natv2.atomic.json_default``)."""
    import numpy as np

    from natv2.atomic import json_text
    from natv2.rundir import read_records, write_json, write_jsonl

    doc = {
        "vector": np.arange(3),
        "scalar": np.float32(0.5),
        "count": np.int64(7),
        "tensor": torch.tensor([1.5, 2.5]),
        "zero_d": torch.tensor(4),
    }
    want = {"vector": [0, 1, 2], "scalar": 0.5, "count": 7, "tensor": [1.5, 2.5], "zero_d": 4}
    write_json(tmp_path / "doc.json", doc)
    assert json.loads((tmp_path / "doc.json").read_text()) == want
    write_jsonl(tmp_path / rundir.EVALUATIONS, [doc, doc])
    assert read_records(tmp_path, "evaluations") == [want, want]
    assert json.loads(json_text(doc)) == want
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        json_text({"bad": object()})


# ------------------------------------------------------------------------------ a run's dataset
# One precedence for what post-processing and export load (rundir.run_dataset): an explicit
# option wins, then what the run recorded (config.json's top level, then its request), then the
# default (None: no dataset named; load_dataset's ./data).

RECORDED = {"dataset": "cifar10", "data_dir": "/recorded"}
REQUESTED = {"dataset": "cifar100", "data_dir": "/requested"}


@pytest.mark.parametrize(
    ("config", "given", "expected"),
    [
        ({**RECORDED, "request": REQUESTED}, ("npz:/given", "/given"), ("npz:/given", "/given")),
        ({**RECORDED, "request": REQUESTED}, (None, None), ("cifar10", "/recorded")),
        ({"request": REQUESTED}, (None, None), ("cifar100", "/requested")),
        ({"request": REQUESTED}, (None, "/given"), ("cifar100", "/given")),
        (
            {"dataset": "digits", "data_dir": None, "request": REQUESTED},
            (None, None),
            ("digits", "/requested"),
        ),
        ({}, (None, None), (None, None)),
        ({"request": "not an object"}, (None, None), (None, None)),
    ],
)
def test_run_dataset_precedence_explicit_then_recorded_then_default(config, given, expected):
    dataset, data_dir = given
    which = rundir.run_dataset(config, dataset=dataset, data_dir=data_dir)
    assert (which.name, which.data_dir) == expected


def _cifar_run(root: Path, config: dict) -> str:
    """A run directory whose config names cifar10 and whose front holds one subnet: enough for
    ``natv2 export`` to reach the dataset (which is not there) and name where it looked."""
    import numpy as np

    from natv2.space import SearchSpace

    space = SearchSpace("exits", widths=(1.0,))
    vector = space.sample(1, np.random.default_rng(0))[0]
    arch = space.decode(vector)
    root.mkdir()
    doc = {"encoding": "exits", "dataset": "cifar10", **config}
    (root / rundir.CONFIG).write_text(json.dumps(doc))
    record = {"id": arch.id, "encoding": "exits", "vector": [int(v) for v in vector]}
    (root / f"{rundir.FRONT}.json").write_text(json.dumps([record]))
    return arch.id


@pytest.mark.parametrize(
    ("recorded", "requested", "given", "looked_in"),
    [
        (True, True, True, "given"),
        (True, True, False, "recorded"),
        (False, True, False, "requested"),
    ],
)
def test_export_loads_the_dataset_from_the_data_dir_by_the_same_precedence(
    cli, tmp_path, recorded, requested, given, looked_in
):
    config: dict = {}
    if recorded:
        config["data_dir"] = str(tmp_path / "recorded")
    if requested:
        config["request"] = {"data_dir": str(tmp_path / "requested")}
    subnet = _cifar_run(tmp_path / "run", config)
    extra = ["--data-dir", str(tmp_path / "given")] if given else []
    res = cli("export", tmp_path / "run", "--subnet", subnet, "--runs", "0", *extra)
    assert res.code == 2
    assert f"looked in {tmp_path / looked_in / 'cifar-10-batches-py'}" in res.err
