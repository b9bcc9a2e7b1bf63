"""Neural Architecture Transfer: a supernet pretrained on one dataset searched on another."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from natv2.accelerator import resolve_accelerator
from natv2.data import load_dataset
from natv2.device_profiles import Costs, load_profile
from natv2.evaluate import EvalData, evaluate_subnet
from natv2.supernet.checkpoint import load_supernets
from natv2.transfer import needs_transfer, rehead, warm_up, warmup_schedule

CLASSES = (0, 1, 7)  # a 3-class target: the test supernet was trained on all 10 digits


@pytest.fixture(scope="module")
def three_digits(tmp_path_factory, digits):
    """digits 0, 1 and 7 as an npz dataset (labels 0..2), carved by the loader."""
    xs, ys = [], []
    for split in (digits.train, digits.val, digits.test):
        for i in range(len(split)):
            x, y = split[i]
            if int(y) in CLASSES:
                xs.append(x[0].numpy())  # grayscale stored as 3 equal channels
                ys.append(CLASSES.index(int(y)))
    path = tmp_path_factory.mktemp("npz") / "three.npz"
    np.savez(path, x=np.stack(xs).astype(np.uint8), y=np.array(ys, dtype=np.int64))
    return path


def test_rehead_replaces_only_the_classifiers(supernet_ckpt):
    nets, meta = load_supernets(supernet_ckpt)
    net = nets[1.0]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert rehead(net, 3, seed=0) and net.config.num_classes == 3
    assert not rehead(net, 3, seed=0)  # already right: nothing changes
    after = net.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        if ".classifier." in key:
            assert after[key].shape[0] == 3, key
        else:
            assert torch.equal(value, after[key]), key
    net.set_active(net.space.maximal())
    assert net(torch.zeros(2, 3, 48, 48)).shape == (2, 3)
    assert meta["dataset"] == "digits"


def test_warm_up_raises_the_maximal_subnets_accuracy_and_resumes(
    supernet_ckpt, three_digits, tmp_path
):
    acc = resolve_accelerator("cpu")
    data = load_dataset(f"npz:{three_digits}")
    nets, meta = load_supernets(supernet_ckpt)
    assert needs_transfer(meta, nets[1.0].config.num_classes, data)
    rehead(nets[1.0], data.num_classes, seed=0)
    logs: list[str] = []
    kw: dict[str, Any] = dict(
        epochs=2, lr=3e-3, batch_size=32, steps_per_epoch=8, calibration_images=64
    )
    (result,) = warm_up(
        nets,
        data,
        acc,
        **kw,
        recipe="sandwich",
        checkpoint_dir=tmp_path,
        show_progress=False,
        log=logs.append,
    )
    # a fresh 3-class head is near chance; 16 steps on the target lift the maximal subnet far
    assert result.steps == 16 and result.top1_before < 0.6 and result.top1_after > 0.85
    assert "transfer warm-up (sandwich)" in logs[0] and "->" in logs[0]
    # a second call finds the finished warm-up checkpoint and trains no further
    state = {k: v.clone() for k, v in nets[1.0].state_dict().items()}
    (again,) = warm_up(
        nets,
        data,
        acc,
        **kw,
        recipe="sandwich",
        checkpoint_dir=tmp_path,
        show_progress=False,
        log=logs.append,
    )
    assert again.steps == 16
    for key, value in nets[1.0].state_dict().items():
        assert torch.equal(value, state[key]), key
    cache = EvalData(data, data.val, data.calibration_subset(64), acc)
    maximal = nets[1.0].space.maximal()
    assert evaluate_subnet(nets[1.0], maximal, cache)["top1"] == pytest.approx(result.top1_after)


def test_the_paper_recipe_trains_the_maximal_network_with_its_exits(supernet_ckpt):
    nets, _ = load_supernets(supernet_ckpt)
    sched = warmup_schedule(nets[1.0], 5, 7.5e-3, 256, None, "maximal")
    (phase,) = sched.phases
    assert phase.step == "warmup" and sched.exit_weighting == "desc" and phase.lr == 7.5e-3
    assert phase.choices.exits == (5,) and phase.choices.depths == (4,)


def test_search_on_a_dataset_with_other_classes(
    cli, supernet_ckpt, three_digits, tight_profile, tmp_path
):
    profile = tight_profile
    out = tmp_path / "run"
    args = ["search", "--device", profile, "--dataset", f"npz:{three_digits}"]
    args += ["--supernet", supernet_ckpt, "--preset", "smoke", "--out", out]
    res = cli(*args, "--accelerator", "cpu")
    assert res.code == 0, res.err
    text = res.out + res.err
    target = f"npz:{three_digits}"
    assert f"re-headed the w1.0 supernet's exits for {target}: 10 -> 3 classes" in text
    assert f"transfer warm-up (sandwich) of the w1.0 supernet on {target}: 6 steps" in text
    config = json.loads((out / "config.json").read_text())
    assert config["transfer"] == {"from_dataset": "digits"}
    assert config["supernet_config"]["num_classes"] == 3
    nets, _ = load_supernets(out / "supernet.pt")
    assert nets[1.0].config.num_classes == 3
    checks = load_profile(profile)
    for rec in json.loads((out / "front.json").read_text()):
        assert checks.judge(Costs.of(rec)).fits, rec["id"]
    first = json.loads((out / "front.json").read_text())[0]["id"]
    res = cli("export", out, "--subnet", first, "--runs", "0", "--limit", "32")
    assert res.code == 0, res.err
    report = json.loads((out / "exports" / first / "report.json").read_text())
    assert report["num_classes"] == 3
