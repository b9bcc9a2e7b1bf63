"""``natv2 import-ofa``: OFA's MobileNetV3 supernet weights run identically in natv2's supernet.

The reference is OFA itself (the ``ofa`` package, a test-only dependency): a randomly initialised
``OFAMobileNetV3`` with randomised BatchNorm statistics and kernel-transform matrices is saved,
imported, and compared subnet by subnet with ``set_active_subnet`` + forward.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

ofa_networks = pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks")

from natv2.ofa_import import (  # noqa: E402
    canonical_ofa_key,
    import_ofa_checkpoint,
    import_ofa_state_dict,
    ofa_key_map,
)
from natv2.space import SearchSpace  # noqa: E402
from natv2.supernet.checkpoint import load_supernets  # noqa: E402
from natv2.supernet.config import config_for_encoding  # noqa: E402
from natv2.supernet.elastic import running_stats  # noqa: E402

N_SUBNETS = 50
TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Batch-2 forwards gain nothing from intra-op threads, and with a busy second core torch's
    two OpenMP threads made these tests ~25x slower (5 min instead of 12 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_ofa(width: float, seed: int):
    """OFA's supernet with non-trivial weights everywhere a mapping mistake would show."""
    torch.manual_seed(seed)
    net = ofa_networks.OFAMobileNetV3(
        n_classes=1000,
        dropout_rate=0,
        width_mult=width,
        ks_list=[3, 5, 7],
        expand_ratio_list=[3, 4, 6],
        depth_list=[2, 3, 4],
    )
    g = torch.Generator().manual_seed(seed + 1)
    bns = {n: m for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_matrix"):  # identity at init: make 7to5 / 5to3 matter
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for name, bn in bns.items():
            # Small gains on the BN that ends each residual branch keep 20 blocks from blowing up.
            small = ".point_linear." in name
            bn.weight.uniform_(*((0.2, 0.5) if small else (0.5, 1.5)), generator=g)
            bn.bias.normal_(0.0, 0.05 if small else 0.2, generator=g)
            bn.reset_running_stats()
            bn.momentum = None
        # Calibrate the statistics on the maximal net so activations stay O(1), then perturb them.
        net.train()
        net.set_max_net()
        net(torch.randn(8, 3, 64, 64, generator=g))
        for bn in bns.values():
            bn.momentum = 0.1
            mean, var, count = running_stats(bn)
            noise = torch.randn(mean.shape, generator=g)
            mean.add_(0.1 * var.sqrt() * noise)  # relative to the spread
            var.mul_(torch.empty(var.shape).uniform_(0.8, 1.25, generator=g))
            count.fill_(int(torch.randint(1, 10**6, (1,), generator=g)))
        net.classifier.linear.weight.normal_(0.0, 0.3, generator=g)
        net.classifier.linear.bias.normal_(0.0, 0.1, generator=g)
    return net.eval()


@pytest.fixture(scope="module")
def ofa_ckpt(tmp_path_factory):
    """width -> (OFA net, path of its saved state dict); built once per width."""
    made: dict[float, tuple] = {}

    def get(width: float):
        if width not in made:
            net = _random_ofa(width, seed=int(width * 10))
            path = tmp_path_factory.mktemp("ofa") / f"ofa_mbv3_d234_e346_k357_w{width:.1f}"
            torch.save(net.state_dict(), path)
            made[width] = (net, path)
        return made[width]

    return get


def _max_difference(ofa, net, width: float, n: int, seed: int = 0) -> tuple[float, list]:
    space = SearchSpace("baseline", widths=(width,))
    g = torch.Generator().manual_seed(seed)
    worst, outs = 0.0, []
    net.eval()
    for vector in space.sample(n, np.random.default_rng(seed)):
        arch = space.decode(vector)
        ks = [b.kernel if b is not None else 7 for b in arch.levels]
        es = [b.expand if b is not None else 6 for b in arch.levels]
        ofa.set_active_subnet(ks=ks, e=es, d=list(arch.depths))
        net.set_active(arch)
        x = torch.randn(2, 3, arch.resolution, arch.resolution, generator=g)
        with torch.no_grad():
            want, got = ofa(x), net(x)
        assert got.shape == want.shape
        worst = max(worst, (want - got).abs().max().item())
        outs.append((arch, want))
    return worst, outs


@pytest.mark.parametrize("width", [1.0, 1.2])
def test_imported_subnets_match_ofa(ofa_ckpt, width):
    ofa, path = ofa_ckpt(width)
    net = import_ofa_checkpoint(path, width)
    assert net.encoding == "baseline" and net.config.num_classes == 1000
    worst, outs = _max_difference(ofa, net, width, N_SUBNETS)
    assert worst <= TOL, f"max |natv2 - OFA| = {worst:.3g} over {N_SUBNETS} subnets"
    # The comparison means something: logits are O(1) and differ between subnets.
    assert max(o.abs().max().item() for _, o in outs) > 1.0
    kernels = {b.kernel for arch, _ in outs for b in arch.levels if b is not None}
    expands = {b.expand for arch, _ in outs for b in arch.levels if b is not None}
    depths = {d for arch, _ in outs for d in arch.depths}
    assert kernels == {3, 5, 7} and expands == {3, 4, 6} and depths == {2, 3, 4}
    assert (outs[0][1] - outs[1][1]).abs().max().item() > 100 * TOL


def test_key_map_is_total_and_copies_every_tensor(ofa_ckpt):
    ofa, _ = ofa_ckpt(1.0)
    ofa_sd = ofa.state_dict()
    net = import_ofa_state_dict(ofa_sd, 1.0)
    natv2_sd = net.state_dict()
    key_map = ofa_key_map(config_for_encoding("baseline", preset="ofa-mbv3", width=1.0))
    assert set(key_map) == set(natv2_sd)
    assert {canonical_ofa_key(k) for k in key_map.values()} == {
        canonical_ofa_key(k) for k in ofa_sd
    }
    assert set(key_map.values()) == set(ofa_sd)  # spelled as the ofa package spells them
    for n, o in key_map.items():
        assert torch.equal(natv2_sd[n], ofa_sd[o]), n
    assert natv2_sd["stages.0.0.irb.depthwise.transforms.7to5"].shape == (25, 25)
    assert natv2_sd["stem.1.num_batches_tracked"].item() > 0


def test_cli_imports_wrapped_checkpoint_with_old_names(ofa_ckpt, cli, tmp_path):
    ofa, path = ofa_ckpt(1.0)
    # DataParallel prefix, OFA's older block name, wrapped as {"state_dict": ...} with metadata.
    old = {
        "module." + re.sub(r"^(blocks\.\d+)\.conv\.", r"\1.mobile_inverted_conv.", k): v
        for k, v in ofa.state_dict().items()
    }
    wrapped = tmp_path / "wrapped.pth.tar"
    torch.save({"epoch": 3, "state_dict": old}, wrapped)
    out = tmp_path / "supernet.pt"
    res = cli("import-ofa", wrapped, "--width", "1.0", "--out", out, "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["classes"] == 1000 and doc["classifier_reinitialised"] is False
    assert doc["supernet"] == "ofa-mbv3-w1.0" and doc["encoding"] == "baseline"
    assert doc["params"] > 7_000_000 and doc["ignored"] == {}
    nets, meta = load_supernets(out)
    assert meta == {"source": "ofa", "checkpoint": str(wrapped), "width": 1.0, "classes": 1000}
    loaded = nets[1.0]
    reference = import_ofa_checkpoint(path, 1.0).state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, reference[k]), k
    worst, _ = _max_difference(ofa, loaded, 1.0, 5, seed=3)
    assert worst <= TOL

    text = cli("import-ofa", path, "--width", "1.0", "--out", tmp_path / "b.pt")
    assert text.code == 0, text.err
    assert "classifier from the checkpoint" in text.out and "parameters" in text.out


def test_classes_reinitialises_only_the_classifier(ofa_ckpt, cli, tmp_path):
    ofa, path = ofa_ckpt(1.2)
    out = tmp_path / "cifar.pt"
    res = cli("import-ofa", path, "--width", "1.2", "--classes", "10", "--out", out, "--json")
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["classes"] == 10 and doc["checkpoint_classes"] == 1000
    assert doc["classifier_reinitialised"] is True
    assert set(doc["ignored"]) == {"classifier.linear.weight", "classifier.linear.bias"}
    nets, meta = load_supernets(out)
    assert meta["classes"] == 10 and meta["width"] == 1.2
    got = nets[1.2].state_dict()
    full = import_ofa_state_dict(ofa.state_dict(), 1.2).state_dict()
    assert got["exits.5.classifier.weight"].shape == (10, 1536)
    assert got["exits.5.classifier.bias"].shape == (10,)
    for k, v in got.items():
        if not k.startswith("exits.5.classifier."):
            assert torch.equal(v, full[k]), k
    # Seeded: the same seed gives the same classifier, another seed another one.
    same = import_ofa_state_dict(ofa.state_dict(), 1.2, num_classes=10, seed=0).state_dict()
    other = import_ofa_state_dict(ofa.state_dict(), 1.2, num_classes=10, seed=1).state_dict()
    assert torch.equal(same["exits.5.classifier.weight"], got["exits.5.classifier.weight"])
    assert not torch.equal(other["exits.5.classifier.weight"], got["exits.5.classifier.weight"])
    # Asking for the checkpoint's own class count keeps its classifier.
    kept = import_ofa_state_dict(ofa.state_dict(), 1.2, num_classes=1000).state_dict()
    assert torch.equal(kept["exits.5.classifier.weight"], full["exits.5.classifier.weight"])


class _NotATensor:
    pass


def test_bad_checkpoints_exit_2_with_the_fix(ofa_ckpt, cli, tmp_path):
    _, path12 = ofa_ckpt(1.2)
    ofa10, _ = ofa_ckpt(1.0)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint\n" * 10)
    pickled = tmp_path / "object.pth"
    torch.save({"state_dict": _NotATensor()}, pickled)
    truncated = tmp_path / "missing_key.pth"
    sd = dict(ofa10.state_dict())
    del sd["blocks.7.conv.depth_conv.conv.5to3_matrix"]
    torch.save(sd, truncated)
    extra = tmp_path / "extra_key.pth"
    torch.save({**ofa10.state_dict(), "blocks.99.conv.weight": torch.zeros(1)}, extra)
    nan = tmp_path / "nan.pth"
    sd = dict(ofa10.state_dict())
    sd["blocks.3.conv.depth_conv.bn.bn.running_var"] = torch.full_like(
        sd["blocks.3.conv.depth_conv.bn.bn.running_var"], float("nan")
    )
    torch.save(sd, nan)
    cut = tmp_path / "truncated.pth"
    cut.write_bytes(path12.read_bytes()[:100_000])
    out = tmp_path / "never.pt"
    cases = [
        ((corrupt, "--width", "1.0"), [str(corrupt), "not a torch file"]),
        ((pickled, "--width", "1.0"), [str(pickled), "_NotATensor", "weights_only=True"]),
        ((cut, "--width", "1.2"), [str(cut), "truncated or corrupt"]),
        ((path12, "--width", "1.0"), [str(path12), "pass --width 1.2", "first_conv.conv.weight"]),
        ((truncated, "--width", "1.0"), ["blocks.7.conv.depth_conv.conv.5to3_matrix", "missing"]),
        ((extra, "--width", "1.0"), ["unexpected tensor 'blocks.99.conv.weight'"]),
        ((nan, "--width", "1.0"), ["blocks.3.conv.depth_conv.bn.bn.running_var", "NaN"]),
        ((tmp_path / "nope.pth", "--width", "1.0"), ["does not exist"]),
        ((path12, "--width", "1.1"), ["pass --width 1.0 or --width 1.2"]),
    ]
    for args, needles in cases:
        res = cli("import-ofa", *args, "--out", out)
        assert res.code == 2, (args, res.err)
        for needle in needles:
            assert needle in res.err, (needle, res.err)
        assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    assert not out.exists()
