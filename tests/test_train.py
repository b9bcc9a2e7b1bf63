"""Supernet training: EPS on every encoding, resume, torchrun equivalence, KD helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from natv2.accelerator import resolve_accelerator
from natv2.data import load_dataset
from natv2.distill import exit_weights, teacher_probs
from natv2.space import ENCODINGS, SearchSpace
from natv2.supernet import build_supernet, config_for_encoding
from natv2.supernet.checkpoint import load_supernets
from natv2.train import SupernetTrainer, make_schedule

HELPERS = Path(__file__).parent / "helpers"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_schedule(encoding: str, warmup_epochs: int = 1):
    """The EPS test schedule at 48 px only, so every encoding runs in seconds."""
    space = SearchSpace(encoding, resolutions=(48,), widths=(1.0,))
    sched = make_schedule("test", space)
    phases = tuple(
        replace(p, epochs=warmup_epochs) if p.step == "teacher" else p for p in sched.phases
    )
    return replace(sched, phases=phases)


def fixed_batch_loss(net, data):
    """Loss of the maximal subnet on a fixed batch (batch statistics, no update)."""
    x = torch.stack([data.train[i][0] for i in range(64)])
    y = torch.tensor([data.train[i][1] for i in range(64)])
    x = data.prepare_batch(x, 48, train=False)
    net.set_active(replace(net.space.maximal(), resolution=48))
    net.train()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(net(x), y))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_eps_runs_every_phase_of_every_encoding(encoding, digits):
    acc = resolve_accelerator("cpu")
    net = build_supernet(config_for_encoding(encoding, preset="tiny", width=1.0), seed=0)
    sched = replace(small_schedule(encoding), batch_size=16, steps_per_epoch=1)
    trainer = SupernetTrainer(net, digits, acc, sched, seed=0, show_progress=False)
    state = trainer.run()
    steps = [p.step for p in sched.phases]
    exits, parallel = encoding.startswith("exits"), "parallel" in encoding
    expected = ["teacher"] + ["warmup"] * exits  # AEP joint warm-up only when there are exits
    expected += ["resolution", "kernel", "depth", "depth", "expand", "expand"]
    expected += ["level", "level"] * parallel + ["exit", "exit"] * exits
    assert steps == expected
    assert [h["step_name"] for h in state.history] == steps
    assert state.step == len(steps)
    assert trainer.teacher is not None  # re-extracted at the end of each step


def test_teacher_phase_lowers_the_loss(digits):
    acc = resolve_accelerator("cpu")
    net = build_supernet(config_for_encoding("exits+parallel", preset="tiny", width=1.0), seed=0)
    before = fixed_batch_loss(net, digits)
    sched = small_schedule("exits+parallel", warmup_epochs=10)
    warm = replace(sched, phases=sched.phases[:1], batch_size=32, steps_per_epoch=2)
    SupernetTrainer(net, digits, acc, warm, seed=0, show_progress=False).run()
    after = fixed_batch_loss(net, digits)
    assert after < before - 0.05, (before, after)


def test_resume_continues_with_the_same_steps_and_optimizer_state(digits, tmp_path):
    acc = resolve_accelerator("cpu")
    sched = small_schedule("exits+parallel", warmup_epochs=2)
    sched = replace(sched, phases=sched.phases[:4], batch_size=16)  # teacher .. kernel
    cfg = config_for_encoding("exits+parallel", preset="tiny", width=1.0)

    full = SupernetTrainer(build_supernet(cfg, seed=1), digits, acc, sched, 4, show_progress=False)
    full.run(checkpoint=tmp_path / "full.pt")

    ckpt = tmp_path / "part.pt"
    first = SupernetTrainer(build_supernet(cfg, seed=1), digits, acc, sched, 4, show_progress=False)

    def stop_after_three_epochs(state):
        if len(state.history) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        first.run(checkpoint=ckpt, on_epoch=stop_after_three_epochs)
    resumed = SupernetTrainer(
        build_supernet(cfg, seed=9), digits, acc, sched, 4, show_progress=False
    )
    resumed.load(ckpt)
    assert resumed.state.step == first.state.step and len(resumed.state.history) == 3
    saved_opt = torch.load(ckpt, weights_only=True)["optimizer"]
    for a, b in zip(
        saved_opt["state"].values(), resumed.optimizer.state_dict()["state"].values(), strict=True
    ):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    resumed.run(checkpoint=ckpt)
    assert resumed.state.step == full.state.step
    for (name, a), b in zip(
        full.net.state_dict().items(), resumed.net.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_corrupt_training_checkpoint_is_a_clear_error(digits, tmp_path):
    from natv2.errors import Natv2Error

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    trainer = SupernetTrainer(
        build_supernet(config_for_encoding("baseline", preset="tiny", width=1.0)),
        digits,
        resolve_accelerator("cpu"),
        small_schedule("baseline"),
        show_progress=False,
    )
    with pytest.raises(Natv2Error, match="not a readable training checkpoint"):
        trainer.load(bad)


def test_torchrun_two_ranks_equal_single_process(tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    worker = str(HELPERS / "ddp_train.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", worker]
    subprocess.run([*cmd, str(tmp_path)], check=True, env=env, timeout=600, capture_output=True)
    subprocess.run(
        [sys.executable, worker, str(tmp_path), "--single"], check=True, env=env, timeout=600
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    changed = 0
    for name, p in single.items():
        assert torch.equal(r0[name], r1[name]), name  # ranks hold identical weights
        assert torch.allclose(r0[name], p, atol=1e-5), name
    init = build_supernet(config_for_encoding("exits+parallel", preset="tiny", width=1.0), seed=3)
    for name, p in init.named_parameters():
        changed += not torch.allclose(p, single[name])
    assert changed > 10  # the run really trained


def test_exit_weightings_and_ens_kd_target():
    assert exit_weights(3, "asc") == ([1 / 6, 2 / 6, 3 / 6], [1 / 6, 2 / 6, 3 / 6])
    loss_w, ens_w = exit_weights(3, "mix")
    assert loss_w == [3 / 6, 2 / 6, 1 / 6] and ens_w == [1 / 6, 2 / 6, 3 / 6]
    logits = [torch.randn(4, 10) for _ in range(3)]
    target = teacher_probs(logits, "desc")
    expected = sum(
        (w * torch.softmax(o, 1) for w, o in zip([3 / 6, 2 / 6, 1 / 6], logits, strict=True)),
        torch.zeros(4, 10),
    )
    assert torch.allclose(target, expected) and torch.allclose(target.sum(1), torch.ones(4))


def test_train_supernet_cli_writes_a_loadable_family(cli, tmp_path, monkeypatch):
    import natv2.train as train_mod

    real = train_mod.make_schedule
    monkeypatch.setattr("natv2.pretrain.make_schedule", lambda name, space: real("test", space))
    out = tmp_path / "sn.pt"
    res = cli(
        "train-supernet",
        "--supernet",
        "tiny-w1.0",
        "--encoding",
        "baseline",
        "--dataset",
        "digits",
        "--out",
        out,
        "--accelerator",
        "cpu",
        "--json",
    )
    assert res.code == 0, res.err
    doc = res.json()
    assert 0.0 <= doc["widths"]["1.0"]["maximal_test_top1"] <= 1.0
    nets, meta = load_supernets(out)
    assert list(nets) == [1.0] and meta["dataset"] == "digits"
    bad = cli("train-supernet", "--dataset", "npz:/nonexistent.npz", "--out", tmp_path / "x.pt")
    assert bad.code == 2 and "nonexistent" in bad.err
