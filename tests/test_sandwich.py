"""From-scratch sandwich training: sampling, in-place distillation, resume, torchrun, fixes."""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from natv2.accelerator import resolve_accelerator
from natv2.data import load_dataset
from natv2.distill import feature_distillation_loss, inplace_distillation_target, teacher_probs
from natv2.errors import Natv2Error
from natv2.space import SearchSpace
from natv2.supernet import build_supernet, config_for_encoding
from natv2.supernet.elastic import running_stats
from natv2.train import (
    Phase,
    SupernetTrainer,
    make_schedule,
    phase_lr,
    sandwich_sampler,
    sandwich_schedule,
)

HELPERS = Path(__file__).parent / "helpers"
ENCODING = "exits+parallel"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny_sandwich(epochs: int = 1, steps: int = 2, subnets: int = 4, **kw):
    """The scratch recipe cut to a few steps of batch 16 at 48 px (seconds on a CPU)."""
    sched = sandwich_schedule("scratch-test", epochs, 0.1, 16, steps, 1, subnets)
    return replace(sched, **kw)


def small_space(encoding: str = ENCODING) -> SearchSpace:
    return SearchSpace(encoding, resolutions=(48,), widths=(1.0,))


def net_for(encoding: str = ENCODING, seed: int = 0):
    net = build_supernet(config_for_encoding(encoding, preset="tiny", width=1.0), seed=seed)
    net.space = small_space(encoding)  # 48 px only: the tests stay fast
    return net


def test_scratch_is_one_sandwich_phase_with_a_from_scratch_optimizer():
    sched = make_schedule("scratch", SearchSpace(ENCODING))
    assert [p.step for p in sched.phases] == ["sandwich"]
    phase = sched.phases[0]
    assert phase.subnets_per_batch == 4
    # AdamW at 4x the adaptation rate 2.5e-3; its decay (decoupled) is AdamW's scale, not SGD's
    assert sched.optimizer == "adamw" and phase.lr >= 1e-2 and sched.weight_decay >= 1e-3
    assert sched.steps_per_epoch is not None
    assert 0 < phase.warmup_steps < phase.epochs * sched.steps_per_epoch
    assert sched.label_smoothing > 0 and sched.grad_clip_value is not None
    assert not sched.decay_norm_and_bias
    # linear warm-up to the peak, then cosine to zero
    total = phase.epochs * sched.steps_per_epoch
    lrs = [phase_lr(phase, t, total) for t in range(total)]
    peak = int(np.argmax(lrs))
    assert peak == phase.warmup_steps - 1 and lrs[peak] == pytest.approx(phase.lr)
    assert all(a < b for a, b in itertools.pairwise(lrs[: peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[peak:]))
    assert lrs[-1] < 0.01 * phase.lr


def test_sandwich_sampler_puts_maximal_and_minimal_first_every_step():
    space = SearchSpace(ENCODING, widths=(1.0,))
    sample = sandwich_sampler(space)
    randoms: set[str] = set()
    for step in range(20):
        archs = sample(np.random.default_rng([0, step]), 4)
        assert len(archs) == 4
        assert archs[0] == space.maximal() and archs[1] == space.minimal()
        assert archs[0].resolution == max(space.allowed_resolutions)
        assert archs[1].resolution == min(space.allowed_resolutions)
        randoms.update(a.id for a in archs[2:])
    assert len(randoms) > 30  # the random ones change from step to step


def test_every_training_step_runs_maximal_minimal_and_random_subnets(digits):
    acc = resolve_accelerator("cpu")
    net = net_for()
    seen: list = []
    original = net.set_active

    def record(arch):
        seen.append(arch)
        original(arch)

    net.set_active = record
    trainer = SupernetTrainer(net, digits, acc, tiny_sandwich(steps=3), seed=0, show_progress=False)
    trainer.run()
    assert trainer.state.step == 3 and trainer.teacher is None  # no teacher copy exists
    steps = [seen[i : i + 4] for i in range(0, len(seen), 4)]
    assert len(steps) == 3
    space = net.space
    for archs in steps:
        assert archs[0] == space.maximal() and archs[1] == space.minimal()
        assert space.maximal() not in archs[2:]
    exits = {a.exit for s in steps for a in s}
    assert {1, 5} <= exits  # every exit can be live from the first step


@pytest.mark.parametrize("feature_kd", [0.0, 1.0])
def test_inplace_distillation_target_is_detached(digits, feature_kd):
    logits = torch.randn(4, 10, requires_grad=True)
    target = inplace_distillation_target(logits)
    assert not target.requires_grad
    assert torch.allclose(target.sum(1), torch.ones(4))
    # behaviour: a student identical to the maximal subnet gets a zero distillation gradient,
    # so a step of [maximal, maximal] moves the weights exactly as a step of [maximal] does;
    # were the target not detached, the student's loss would also push the teacher's logits
    # (and, with stage-output distillation, the teacher's stage outputs)
    acc = resolve_accelerator("cpu")
    space = small_space()
    phase = Phase("sandwich", 1, 0.1, tiny_sandwich().phases[0].choices, 2)
    xb = torch.stack([digits.train[i][0] for i in range(16)])
    yb = torch.tensor([digits.train[i][1] for i in range(16)])
    weights = []
    for copies in (1, 2):
        net = net_for(seed=4)
        sched = tiny_sandwich(subnets=copies, grad_clip_value=None, feature_kd_weight=feature_kd)
        trainer = SupernetTrainer(net, digits, acc, sched, seed=0, show_progress=False)
        trainer.train_step(
            xb, yb, replace(phase, subnets_per_batch=copies), lambda rng, k: [space.maximal()] * k
        )
        weights.append({k: v.clone() for k, v in net.named_parameters()})
    moved = 0
    for name, w in weights[0].items():
        assert torch.allclose(w, weights[1][name], atol=1e-6), name
        moved += 1
    assert moved > 10


def test_stage_output_distillation_pools_the_teacher_and_trains_only_the_student():
    torch.manual_seed(0)
    teacher = [torch.randn(4, 8, 16, 16, requires_grad=True), torch.randn(4, 16, 8, 8)]
    same = [t.detach().clone().requires_grad_(True) for t in teacher]
    assert feature_distillation_loss(same, teacher) == 0
    # a student at a lower resolution (12 px instead of 16) is compared with the teacher's map
    # average-pooled to its size; stages after the student's exit are not compared
    pooled = torch.nn.functional.adaptive_avg_pool2d(teacher[0].detach(), (12, 12))
    student = [pooled.clone().requires_grad_(True)]
    assert feature_distillation_loss(student, teacher) == 0
    student = [torch.zeros(4, 8, 12, 12, requires_grad=True)]
    loss = feature_distillation_loss(student, teacher)
    assert loss.item() == pytest.approx(1.0)  # relative to the teacher's mean square
    loss.backward()
    assert student[0].grad is not None and student[0].grad.abs().sum() > 0
    assert teacher[0].grad is None  # the teacher's output is a target, never trained towards


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_mid_schedule_gives_the_weights_of_an_uninterrupted_run(digits, tmp_path, optimizer):
    acc = resolve_accelerator("cpu")
    sched = tiny_sandwich(epochs=3, steps=2, optimizer=optimizer)
    full = SupernetTrainer(net_for(seed=1), digits, acc, sched, 4, show_progress=False)
    full.run(checkpoint=tmp_path / "full.pt")

    ckpt = tmp_path / "part.pt"
    first = SupernetTrainer(net_for(seed=1), digits, acc, sched, 4, show_progress=False)

    def stop_after_one_epoch(state):
        if len(state.history) == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        first.run(checkpoint=ckpt, on_epoch=stop_after_one_epoch)
    resumed = SupernetTrainer(net_for(seed=9), digits, acc, sched, 4, show_progress=False)
    resumed.load(ckpt)
    assert resumed.state.step == 2
    resumed.run(checkpoint=ckpt)
    assert resumed.state.step == full.state.step == 6
    for (name, a), b in zip(
        full.net.state_dict().items(), resumed.net.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_the_trainer_builds_the_schedules_optimizer_without_decay_on_norms_and_biases(digits):
    acc = resolve_accelerator("cpu")
    sched = make_schedule("scratch", small_space())
    trainer = SupernetTrainer(net_for(), digits, acc, sched, 0, show_progress=False)
    opt = trainer.optimizer
    assert isinstance(opt, torch.optim.AdamW)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == sched.weight_decay and plain["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in plain["params"])
    sgd = SupernetTrainer(net_for(), digits, acc, tiny_sandwich(), 0, show_progress=False)
    assert isinstance(sgd.optimizer, torch.optim.SGD) and sgd.optimizer.defaults["nesterov"]
    with pytest.raises(Natv2Error, match="unknown optimizer 'lamb'; choose one of sgd, adamw"):
        tiny_sandwich(optimizer="lamb")


def test_a_checkpoint_of_another_recipe_of_the_schedule_is_refused(digits, tmp_path):
    acc = resolve_accelerator("cpu")
    ckpt = tmp_path / "sgd.pt"
    SupernetTrainer(net_for(), digits, acc, tiny_sandwich(), 0, show_progress=False).save(ckpt)
    other = SupernetTrainer(
        net_for(), digits, acc, tiny_sandwich(optimizer="adamw"), 0, show_progress=False
    )
    with pytest.raises(Natv2Error, match="another recipe of schedule scratch-test"):
        other.load(ckpt)


def test_short_splits_are_passed_over_again_to_fill_an_epoch(digits):
    acc = resolve_accelerator("cpu")
    tiny = digits.train.subset(np.arange(40))  # 2 batches of 16 (drop_last)
    data = replace(digits, train=tiny)
    trainer = SupernetTrainer(net_for(), data, acc, tiny_sandwich(steps=5), 0, show_progress=False)
    state = trainer.run()
    assert state.step == 5 and state.history[0]["steps"] == 5


def test_sandwich_torchrun_two_ranks_equal_single_process(tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    worker = str(HELPERS / "ddp_train.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", worker]
    args = [str(tmp_path), "--schedule", "sandwich"]
    subprocess.run([*cmd, *args], check=True, env=env, timeout=600, capture_output=True)
    subprocess.run([sys.executable, worker, *args, "--single"], check=True, env=env, timeout=600)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    init = build_supernet(config_for_encoding(ENCODING, preset="tiny", width=1.0), seed=3)
    start = dict(init.named_parameters())
    changed = 0
    for name, p in single.items():
        assert torch.equal(r0[name], r1[name]), name
        # equal up to the order of float sums (all-reduce against accumulation): a fraction of a
        # per cent of how far the step moved the tensor; a wrong gradient average moves it ~100 %
        moved = (p - start[name]).norm()
        assert (r0[name] - p).norm() <= 1e-2 * moved + 1e-6, name
        changed += bool(moved > 1e-6)
    assert changed > 10


def test_reorder_channels_permutes_the_momentum_with_the_weights(digits):
    """A step after re-ordering equals a step before it, re-ordered: the momentum moved along."""
    acc = resolve_accelerator("cpu")
    sched = replace(make_schedule("test", small_space()), batch_size=16, steps_per_epoch=2)
    sched = replace(sched, phases=sched.phases[:1])  # the maximal network's phase
    trainer = SupernetTrainer(net_for(seed=2), digits, acc, sched, 0, show_progress=False)
    trainer.run()  # two steps: momentum buffers are non-zero now
    other = copy.deepcopy(trainer)
    xb = torch.stack([digits.train[i][0] for i in range(16)])
    yb = torch.tensor([digits.train[i][1] for i in range(16)])
    phase = sched.phases[0]
    sampler = lambda rng, k: [trainer.space.maximal()]  # noqa: E731
    trainer.net.reorder_channels(trainer.optimizer)
    trainer.train_step(xb, yb, phase, sampler)
    other.train_step(xb, yb, phase, sampler)  # the same step in the old channel order
    x = digits.prepare_batch(xb, 48, train=False)
    for t in (trainer, other):
        t.net.eval().set_active(t.space.maximal())
    with torch.no_grad():
        a, b = trainer.net(x), other.net(x)
    assert torch.allclose(a, b, atol=1e-4 * b.abs().max().item())


def test_squeeze_excite_hidden_units_are_reordered_too():
    net = net_for(seed=5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 3, 48, 48)
    net.eval().set_active(net.space.maximal())
    with torch.no_grad():
        before = net(x)
        net.reorder_channels()
        after = net(x)
    assert torch.allclose(before, after, atol=1e-5 * before.abs().max().item())
    with_se = [irb for irb in net.irbs() if irb.se is not None]
    assert with_se
    for irb in with_se:
        importance = irb.se.expand.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:-1] >= importance[1:])


def test_ens_kd_gives_exits_at_chance_almost_no_weight():
    labels = torch.arange(10).repeat(3)
    right = torch.nn.functional.one_hot(labels, 10).float() * 8
    wrong = torch.nn.functional.one_hot((labels + 1) % 10, 10).float() * 8
    target = teacher_probs([wrong, right], "asc", labels=labels)
    assert torch.allclose(target, torch.softmax(right, 1), atol=1e-6)
    fixed = teacher_probs([wrong, right], "asc")  # without labels: the fixed 1/3, 2/3 weights
    expected = torch.softmax(wrong, 1) / 3 + 2 * torch.softmax(right, 1) / 3
    assert torch.allclose(fixed, expected, atol=1e-6)
    none_right = teacher_probs([wrong, wrong], "asc", labels=labels)
    assert torch.allclose(none_right.sum(1), torch.ones(30))


def test_eps_teacher_runs_with_batch_statistics(digits):
    """The teacher's target does not depend on running statistics other subnets left behind."""
    acc = resolve_accelerator("cpu")
    sched = replace(make_schedule("test", small_space()), batch_size=16, steps_per_epoch=1)
    trainer = SupernetTrainer(net_for(seed=6), digits, acc, sched, 0, show_progress=False)
    trainer.extract_teacher()
    xb = torch.stack([digits.train[i][0] for i in range(16)])
    y = torch.tensor([digits.train[i][1] for i in range(16)])
    x = digits.prepare_batch(xb, 48, train=False)
    arch = trainer.space.maximal()
    a = trainer._teacher_target(x, y, arch)
    assert trainer.teacher is not None and a is not None
    for m in trainer.teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            running_stats(m)[0].add_(5.0)
    b = trainer._teacher_target(x, y, arch)
    assert b is not None
    assert torch.allclose(a, b, atol=1e-5)


def test_importing_torch_first_is_detected_and_reported():
    code = (
        "import os; os.environ.pop('OMP_WAIT_POLICY', None)\n"
        "import torch\n"
        "from natv2.runtime import openmp_busy_wait_warning\n"
        "print(openmp_busy_wait_warning() is not None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
    natv2_first = code.replace("import torch\n", "import natv2, torch\n")
    out = subprocess.run(
        [sys.executable, "-c", natv2_first], env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_pretrain_in_two_local_processes_equals_one_process(digits, tmp_path):
    """natv2.launch: the CPU default of two gloo processes of one thread gives the weights of a
    single one-thread process, and an error inside a worker comes back as the same one-line
    Natv2Error. The tolerance is measured: two steps at lr 0.1 from random weights move the
    earliest layers by up to 7e-3 when only the summation order changes (one process with two
    threads), and by 4.6e-5 between one and two processes (micro-batch gradients summed as
    (a + b) / 2 by gloo, a / 2 + b / 2 in one process; the rounding differs by CPU)."""
    from natv2.errors import Natv2Error
    from natv2.pretrain import PretrainConfig, pretrain, training_checkpoint
    from natv2.supernet.checkpoint import load_supernets

    acc = resolve_accelerator("cpu")
    cfg = PretrainConfig("tiny-w1.0", "baseline", "scratch-test", calibration_images=32)
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r1 = pretrain(cfg, digits, acc, one, show_progress=False, log=lambda m: None, processes=1)
    finally:
        torch.set_num_threads(threads)
    r2 = pretrain(cfg, digits, acc, two, show_progress=False, processes=2)
    assert r1["widths"]["1.0"]["steps"] == r2["widths"]["1.0"]["steps"] == 2
    a, b = load_supernets(one)[0][1.0], load_supernets(two)[0][1.0]
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=5e-4), name
    bad = tmp_path / "bad.pt"
    training_checkpoint(bad, 1.0).write_bytes(b"not a checkpoint")
    with pytest.raises(Natv2Error, match="not a readable training checkpoint"):
        pretrain(cfg, digits, acc, bad, resume=True, show_progress=False, processes=2)
