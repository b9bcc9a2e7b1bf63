"""Post-processing: AEP models, weightings, pruning, the two phases, saving, the CLI.

Everything runs on ``digits`` with ``tiny`` supernets and a few optimiser steps, so the whole
file takes well under two minutes on two CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from natv2.accelerator import Accelerator
from natv2.aep import AEP_FORMAT, AEPNet, aep_cost, build_aep, pruned, select_exits
from natv2.distill import exit_weights
from natv2.errors import Natv2Error
from natv2.evaluate import EvalData, recalibrate_bn
from natv2.optim import Lookahead, make_optimizer
from natv2.postprocess import (
    load_postprocessed,
    make_settings,
    postprocess_subnet,
    prune_exits,
    save_postprocessed,
)
from natv2.profiling.cost import segment_costs, subnet_cost
from natv2.profiling.counters import fvcore_macs
from natv2.space import SearchSpace
from natv2.supernet import build_supernet, config_for_encoding, materialize
from natv2.supernet.checkpoint import save_supernets

CPU = Accelerator(torch.device("cpu"))
TINY_TRAINING = {
    "max_epochs": 3,
    "patience": 3,
    "steps_per_epoch": 2,
    "batch_size": 16,
    "calibration_images": 64,
}


def canonical(encoding: str, exit: int, resolution: int = 48):
    """The minimal subnet of ``encoding`` with exit ``exit``, as the search would record it."""
    space = SearchSpace(encoding, widths=(1.0,))
    arch = dataclasses.replace(space.minimal(), exit=exit, resolution=resolution)
    vector = [int(v) for v in space.encode(arch)]
    return space.decode(vector), vector


@pytest.fixture(scope="module")
def supernet():
    cfg = config_for_encoding("exits+parallel", preset="tiny", width=1.0, num_classes=10)
    return build_supernet(cfg, seed=0).eval()


@pytest.fixture(scope="module")
def data():
    from natv2.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def arch3():
    return canonical("exits+parallel", 3)[0]


# ---------------------------------------------------------------------------------------------
# Weightings (docs/reference.md, "AEP weightings": m = 1 + ... + n; UNIF 1/n; ASC i/m; DESC
# falling; MIX loss falling, ensemble rising)
# ---------------------------------------------------------------------------------------------

RISING = {
    1: [Fraction(1, 1)],
    2: [Fraction(1, 3), Fraction(2, 3)],
    3: [Fraction(1, 6), Fraction(2, 6), Fraction(3, 6)],
    4: [Fraction(1, 10), Fraction(2, 10), Fraction(3, 10), Fraction(4, 10)],
    5: [Fraction(1, 15), Fraction(2, 15), Fraction(3, 15), Fraction(4, 15), Fraction(5, 15)],
}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_weightings_match_reference(n):
    rising = [float(f) for f in RISING[n]]
    falling = rising[::-1]
    unif = [float(Fraction(1, n))] * n
    assert exit_weights(n, "unif") == (unif, unif)
    assert exit_weights(n, "asc") == (rising, rising)
    assert exit_weights(n, "desc") == (falling, falling)
    assert exit_weights(n, "mix") == (falling, rising)


def test_asc_three_exits_literal():
    assert exit_weights(3, "asc") == ([1 / 6, 2 / 6, 3 / 6], [1 / 6, 2 / 6, 3 / 6])


@pytest.mark.parametrize("weighting", ["unif", "asc", "desc", "mix"])
def test_aep_model_carries_the_weighting(supernet, arch3, weighting):
    net = build_aep(materialize(supernet, arch3), supernet, weighting)
    loss_w, ens_w = exit_weights(3, weighting)
    assert net.exits == (1, 2, 3)
    assert net.ensemble_weights.tolist() == pytest.approx(ens_w, abs=1e-7)
    assert list(net.loss_weights) == pytest.approx(loss_w, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# The AEP module
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def test_aep_output_is_weighted_sum_of_exit_outputs(supernet, arch3):
    subnet = materialize(supernet, arch3).eval()
    net = build_aep(subnet, supernet, "mix").eval()
    x = torch.randn(4, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    feats = subnet.features(x)  # the plain subnet's stage outputs, computed on their own
    heads = [supernet.exits[str(i)].eval() for i in (1, 2, 3)]
    _, ens = exit_weights(3, "mix")
    expected = sum(w * h(f) for w, h, f in zip(ens, heads, feats, strict=True))
    torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)
    # The final exit's head is the subnet's own: exit 3 alone is the subnet.
    torch.testing.assert_close(net.heads["3"](feats[2]), subnet(x), atol=1e-6, rtol=1e-6)

    # Pruned to exits 1 and 2: stage 3 is gone, weights renormalised.
    small = pruned(net, [1, 2]).eval()
    assert len(small.stages) == 2 and set(small.heads) == {"1", "2"}
    w = [ens[0] / (ens[0] + ens[1]), ens[1] / (ens[0] + ens[1])]
    expected = w[0] * heads[0](feats[0]) + w[1] * heads[1](feats[1])
    torch.testing.assert_close(small(x), expected, atol=1e-5, rtol=1e-5)


def test_aep_costs_agree_with_fvcore(supernet, arch3):
    net = build_aep(materialize(supernet, arch3), supernet, "unif")
    for keep in ([1, 2, 3], [1, 3], [2], [1]):
        small = pruned(net, keep).eval()
        deepest = max(keep)
        expected = subnet_cost(dataclasses.replace(arch3, exit=deepest), supernet.config).macs
        expected += sum(
            segment_costs(dataclasses.replace(arch3, exit=k), supernet.config)["head"].macs
            for k in keep
            if k != deepest
        )
        model = aep_cost(small, supernet.config)
        assert model["macs"] == expected == fvcore_macs(small, (1, 3, 48, 48))
        assert model["params"] == sum(p.numel() for p in small.parameters())


def test_aep_needs_an_exit_supernet(arch3):
    cfg = config_for_encoding("parallel", preset="tiny", width=1.0, num_classes=10)
    plain = build_supernet(cfg, seed=0).eval()
    arch = canonical("parallel", 5)[0]
    with pytest.raises(Natv2Error, match="early exits"):
        build_aep(materialize(plain, arch), plain, "unif")


# ---------------------------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------------------------


def test_select_exits_drops_the_noise_exit_and_keeps_complementary_ones():
    n = 100
    y = torch.arange(n) % 10
    eye = torch.eye(10)
    a = torch.where((torch.arange(n) < 60)[:, None], 2 * eye[y], eye[(y + 1) % 10])
    c = torch.where((torch.arange(n) >= 40)[:, None], 2 * eye[y], eye[(y + 2) % 10])
    noise = 50 * torch.randn(n, 10, generator=torch.Generator().manual_seed(0))
    keep, tried = select_exits([a, noise, c], y, [1 / 3] * 3)
    assert keep == (0, 2)
    assert len(tried) == 7  # every non-empty subset of three
    acc = {tuple(t["positions"]): t["val_accuracy"] for t in tried}
    assert acc[(0, 2)] == 1.0 and acc[(0,)] == acc[(2,)] == 0.6


def test_select_exits_prefers_fewer_exits_on_ties_and_greedy_beyond_five():
    y = torch.arange(20) % 10
    good = 3 * torch.eye(10)[y]
    keep, _ = select_exits([good, good.clone()], y, [0.5, 0.5])
    assert keep == (0,)  # the second adds nothing: dropped
    noise = [10 * torch.randn(20, 10, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    keep, _ = select_exits([*noise, 100 * torch.eye(10)[y]], y, [1 / 7] * 7)
    assert keep == (6,)


def _fit_classifier_(head, feats, labels, classes):
    """Least-squares fit of an exit head's last layer to the one-hot labels of ``classes``
    (zero targets elsewhere): a head that knows only those classes."""
    with torch.no_grad():
        h = head.act(head.mix(head.pool(head.expand(feats)))).flatten(1)
        hb = torch.cat([h, torch.ones(len(h), 1)], 1)
        target = torch.nn.functional.one_hot(labels, 10).float()
        target[:, [c for c in range(10) if c not in classes]] = 0
        sol = torch.linalg.lstsq(hb.double(), target.double()).solution.float()
        head.classifier.weight.copy_(sol[:-1].T)
        head.classifier.bias.copy_(sol[-1])


def test_prune_removes_a_useless_exit_and_keeps_the_others(supernet, arch3, data):
    net = build_aep(materialize(supernet, arch3), supernet, "unif")
    cache = EvalData(data, data.val, data.calibration_subset(128), CPU)
    recalibrate_bn(net, cache.batches("calib", 48))
    batches = cache.batches("eval", 48)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        feats = net.features(x)
    # Exit 1 knows digits 0-4, exit 3 digits 5-9: each helps the other. Exit 2 is noise.
    _fit_classifier_(net.heads["1"], feats[0], y, range(5))
    _fit_classifier_(net.heads["3"], feats[2], y, range(5, 10))
    noise = net.heads["2"].get_submodule("classifier")
    assert isinstance(noise, torch.nn.Linear)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        noise.weight.copy_(100 * torch.randn(noise.weight.shape, generator=gen))
    keep, table = prune_exits(net, batches, CPU)
    assert keep == (1, 3)
    acc = {tuple(t["exits"]): t["val_accuracy"] for t in table}
    assert acc[(1, 3)] > max(acc[(1,)], acc[(3,)], acc[(1, 2, 3)])


# ---------------------------------------------------------------------------------------------
# Optimisers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sgd", "adamw", "ranger"])
def test_optimizers_take_a_step(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    opt = make_optimizer(name, model.parameters(), 1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    loss = model(torch.randn(8, 4)).pow(2).mean()
    loss.backward()
    opt.step()
    sched.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert opt.param_groups[0]["lr"] < 1e-2
    if name == "sgd":
        assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 3e-4
    if name == "ranger":
        assert isinstance(opt, Lookahead) and isinstance(opt.base, torch.optim.RAdam)
        assert (opt.k, opt.alpha) == (6, 0.5)
        assert opt.base.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


@pytest.mark.parametrize("name", ["sgd", "adamw", "ranger"])
def test_fit_trains_with_each_optimizer(supernet, data, name):
    from natv2.postprocess import fit

    net = materialize(supernet, canonical("exits+parallel", 1)[0])
    before = [p.detach().clone() for p in net.parameters()]
    settings = make_settings("finetune", "cpu", optimizer=name, steps_per_epoch=1, batch_size=8)
    out = fit(net, data, data.train, settings, CPU, epochs=1)
    assert out["epochs_run"] == 1 and out["history"][0]["steps"] == 1
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))


def test_lookahead_syncs_every_k_steps_and_resumes_from_its_state_dict():
    def run(opt_model, steps, start=0):
        opt, model = opt_model
        for i in range(start, start + steps):
            opt.zero_grad()
            x = torch.randn(8, 4, generator=torch.Generator().manual_seed(i))
            model(x).pow(2).mean().backward()
            opt.step()

    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        return Lookahead(torch.optim.RAdam(model.parameters(), lr=1e-2), k=3), model

    opt, model = fresh()
    run((opt, model), 3)
    # After k steps the fast weights are reset to the (updated) slow weights.
    for i, p in enumerate(model.parameters()):
        torch.testing.assert_close(p.detach(), opt.slow[i])
    run((opt, model), 4, start=3)
    state = opt.state_dict()
    reference = fresh()
    run(reference, 11)

    opt2, model2 = fresh()
    model2.load_state_dict(model.state_dict())
    opt2.load_state_dict(state)
    run((opt2, model2), 4, start=7)
    for a, b in zip(model2.parameters(), reference[1].parameters(), strict=True):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------
# The two phases, saving and loading
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aep_run(supernet, arch3, data):
    events: list[tuple[int, int]] = []
    settings = make_settings("aep", "cpu", lr=3e-3, **TINY_TRAINING)
    res = postprocess_subnet(
        materialize(supernet, arch3),
        data,
        settings,
        CPU,
        supernet=supernet,
        on_epoch=lambda phase, rec: events.append((phase, rec["epoch"])),
    )
    return res, events


def test_phase_two_runs_exactly_the_epochs_chosen_in_phase_one(aep_run):
    res, events = aep_run
    doc = res.result
    e = doc["epochs_chosen"]
    p1 = doc["phase1"]["history"]
    assert [h["epoch"] for h in p1] == list(range(len(p1)))
    assert e == min(range(len(p1)), key=lambda i: (p1[i]["val_loss"], i))
    assert e >= 1  # AdamW at 3e-3 lowers the validation loss of an untrained supernet's subnet
    assert [ev for ev in events if ev[0] == 2] == [(2, k) for k in range(1, e + 1)]
    assert doc["phase2"]["epochs_run"] == len(doc["phase2"]["history"]) == e
    assert [h["lr"] for h in doc["phase2"]["history"]] == [h["lr"] for h in p1[1 : e + 1]]


def test_aep_result_document(aep_run, supernet, arch3):
    res, _ = aep_run
    doc = res.result
    assert doc["method"] == "aep" and doc["optimizer"] == "adamw" and doc["weighting"] == "unif"
    ex = doc["exits"]
    assert ex["candidates"] == [1, 2, 3] and ex["kept"] and len(ex["subsets"]) == 7
    assert sorted(ex["kept"] + ex["pruned"]) == [1, 2, 3]
    assert sum(ex["ensemble_weights"]) == pytest.approx(1.0)
    assert isinstance(res.module, AEPNet) and list(res.module.exits) == ex["kept"]
    after, before = doc["after"], doc["before"]
    assert after["macs_fvcore"] == after["macs_cost_model"]
    assert after["params"] == after["params_cost_model"]
    assert before["macs"] == subnet_cost(arch3, supernet.config).macs
    assert doc["added"]["macs"] == after["macs"] - before["macs"]
    for key in ("test_accuracy", "val_accuracy"):
        assert 0.0 <= before[key] <= 1.0 and 0.0 <= after[key] <= 1.0


def test_saved_models_rebuild_with_the_same_outputs(aep_run, supernet, arch3, tmp_path):
    res, _ = aep_run
    x = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    save_postprocessed(tmp_path / "aep", res.module, res.result)
    desc = json.loads((tmp_path / "aep" / "arch.json").read_text())
    assert desc["format"] == AEP_FORMAT and desc["exits"] == list(res.module.exits)
    assert desc["config"] == supernet.config.to_dict() and desc["weighting"] == "unif"
    loaded = load_postprocessed(tmp_path / "aep")
    assert isinstance(loaded, AEPNet) and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), res.module.eval()(x), atol=0, rtol=0)

    plain = materialize(supernet, arch3).eval()
    save_postprocessed(tmp_path / "plain", plain, {"method": "finetune"})
    assert json.loads((tmp_path / "plain" / "arch.json").read_text())["format"] == "natv2-subnet/1"
    with torch.no_grad():
        torch.testing.assert_close(load_postprocessed(tmp_path / "plain")(x), plain(x))


def test_load_postprocessed_reports_bad_folders(aep_run, tmp_path):
    res, _ = aep_run
    with pytest.raises(Natv2Error, match="does not exist"):
        load_postprocessed(tmp_path / "nothing")
    folder = save_postprocessed(tmp_path / "m", res.module, None)
    (folder / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Natv2Error, match=r"model\.pt.*natv2 postprocess"):
        load_postprocessed(folder)
    (folder / "arch.json").write_text("{broken")
    with pytest.raises(Natv2Error, match=r"arch\.json"):
        load_postprocessed(folder)
    (folder / "arch.json").unlink()
    with pytest.raises(Natv2Error, match=r"arch\.json"):
        load_postprocessed(folder)


def test_settings_reject_bad_values():
    with pytest.raises(Natv2Error, match="optimizer"):
        make_settings("finetune", "cpu", optimizer="adam")
    with pytest.raises(Natv2Error, match="weighting"):
        make_settings("aep", "cpu", weighting="geometric")
    with pytest.raises(Natv2Error, match="preset"):
        make_settings("aep", "gpu")
    paper = make_settings("finetune", "paper")
    assert (paper.optimizer, paper.lr, paper.batch_size) == ("sgd", 1e-4, 64)
    assert (paper.max_epochs, paper.patience, paper.steps_per_epoch) == (150, 30, None)
    assert make_settings("aep", "paper").optimizer == "adamw"


# ---------------------------------------------------------------------------------------------
# The CLI on a fabricated run directory
# ---------------------------------------------------------------------------------------------


def _fabricate_run(path, encoding: str, exits: list[int]):
    cfg = config_for_encoding(encoding, preset="tiny", width=1.0, num_classes=10)
    net = build_supernet(cfg, seed=0).eval()
    path.mkdir(parents=True)
    save_supernets(path / "supernet.pt", {1.0: net})
    front = []
    for x in exits:
        arch, vector = canonical(encoding, x)
        front.append({"id": arch.id, "encoding": encoding, "vector": vector, "accuracy": 0.1})
    config = {
        "dataset": "digits",
        "encoding": encoding,
        "request": {"dataset": "digits", "encoding": encoding},
        "supernet_config": cfg.to_dict(),
        "settings": {"calibration_images": 64},
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "front.json").write_text(json.dumps(front))
    return [r["id"] for r in front]


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    exits_ids = _fabricate_run(root / "exits", "exits+parallel", [3, 1])
    plain_ids = _fabricate_run(root / "plain", "parallel", [5])
    return root / "exits", exits_ids, root / "plain", plain_ids


FAST = ["--max-epochs", "2", "--steps-per-epoch", "2", "--batch-size", "16", "--accelerator", "cpu"]


def test_cli_postprocess_aep_cost_figures(cli, run_dirs):
    run, (x3, _), _, _ = run_dirs
    r = cli("postprocess", run, "--subnet", x3, "--weighting", "asc", "--json", *FAST)
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["method"] == "aep" and doc["weighting"] == "asc" and doc["optimizer"] == "adamw"
    folder = run / "postprocessed" / x3
    assert {p.name for p in folder.iterdir()} >= {"model.pt", "arch.json", "result.json"}
    assert json.loads((folder / "result.json").read_text())["epochs_chosen"] == doc["epochs_chosen"]
    module = load_postprocessed(folder)
    kept = doc["exits"]["kept"]
    assert isinstance(module, AEPNet)
    assert list(module.exits) == kept
    arch = module.arch
    assert arch.id == x3
    from natv2.supernet.config import SupernetConfig

    cfg = SupernetConfig.from_dict(json.loads((run / "config.json").read_text())["supernet_config"])
    body = subnet_cost(dataclasses.replace(arch, exit=max(kept)), cfg)
    heads = [segment_costs(dataclasses.replace(arch, exit=k), cfg)["head"] for k in kept[:-1]]
    macs = body.macs + sum(h.macs for h in heads)
    params = body.params + sum(h.params for h in heads)
    assert fvcore_macs(module, (1, 3, 48, 48)) == macs == doc["after"]["macs"]
    assert sum(p.numel() for p in module.parameters()) == params == doc["after"]["params"]
    assert doc["before"]["macs"] == subnet_cost(arch, cfg).macs
    assert doc["added"]["macs"] == macs - subnet_cost(arch, cfg).macs


def test_cli_postprocess_defaults_to_finetune_for_exit_one(cli, run_dirs):
    run, (_, x1), _, _ = run_dirs
    r = cli("postprocess", run, "--subnet", x1, "--json", "--max-epochs", "1", *FAST[2:])
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["method"] == "finetune" and doc["optimizer"] == "sgd" and doc["exits"] is None
    desc = json.loads((run / "postprocessed" / x1 / "arch.json").read_text())
    assert desc["format"] == "natv2-subnet/1"
    assert doc["after"]["macs"] == doc["before"]["macs"] == doc["after"]["macs_cost_model"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subnet", "r48-w10-x9-nope"], "not in"),
        (["--optimizer", "adam"], "unknown optimizer"),
        (["--method", "boosting"], "unknown method"),
        (["--weighting", "geometric"], "unknown weighting"),
        (["--preset", "gpu"], "unknown preset"),
    ],
)
def test_cli_bad_inputs_exit_2(cli, run_dirs, args, message):
    run, (x3, _), _, _ = run_dirs
    full = ["postprocess", run, *(["--subnet", x3] if "--subnet" not in args else []), *args]
    r = cli(*full, "--accelerator", "cpu")
    assert r.code == 2
    assert message in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_cli_aep_on_a_subnet_without_exits_exits_2(cli, run_dirs, tmp_path):
    _, _, plain, (x5,) = run_dirs
    r = cli("postprocess", plain, "--subnet", x5, "--method", "aep", "--accelerator", "cpu")
    assert r.code == 2 and "early exits" in r.err and "--method finetune" in r.err
    r = cli("postprocess", tmp_path, "--subnet", x5, "--accelerator", "cpu")
    assert r.code == 2 and "not a natv2 run directory" in r.err


def test_fabricated_front_matches_search_ids():
    arch, vector = canonical("exits+parallel", 3)
    assert SearchSpace("exits+parallel").decode(np.array(vector)).id == arch.id


@pytest.mark.parametrize(
    ("recorded", "given", "looked_in"),
    [(True, True, "given"), (True, False, "recorded"), (False, False, "requested")],
)
def test_the_run_dataset_loads_from_the_data_dir_by_rundir_precedence(
    tmp_path, recorded, given, looked_in
):
    """An explicit data_dir wins, then config.json's, then its request's (rundir.run_dataset)."""
    from natv2.postprocess import postprocess_run

    (subnet,) = _fabricate_run(tmp_path / "run", "parallel", [5])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["dataset"] = "cifar10"
    config["request"]["data_dir"] = str(tmp_path / "requested")
    if recorded:
        config["data_dir"] = str(tmp_path / "recorded")
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    data_dir = tmp_path / "given" if given else None
    with pytest.raises(Natv2Error, match="not found") as err:
        postprocess_run(tmp_path / "run", subnet, acc=CPU, data_dir=data_dir)
    assert f"looked in {tmp_path / looked_in / 'cifar-10-batches-py'}" in str(err.value)
    assert not (tmp_path / "run" / "postprocessed" / subnet).exists()


@pytest.mark.parametrize(("given", "looked_in"), [(True, "given"), (False, "recorded")])
def test_the_cli_takes_data_dir_by_the_same_precedence(cli, tmp_path, given, looked_in):
    (subnet,) = _fabricate_run(tmp_path / "run", "parallel", [5])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config.update(dataset="cifar10", data_dir=str(tmp_path / "recorded"))
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    extra = ["--data-dir", str(tmp_path / "given")] if given else []
    res = cli("postprocess", tmp_path / "run", "--subnet", subnet, *extra)
    assert res.code == 2, res.err
    assert f"looked in {tmp_path / looked_in / 'cifar-10-batches-py'}" in res.err
    assert not (tmp_path / "run" / "postprocessed" / subnet).exists()
