"""Elastic supernet and materialisation on the ``tiny`` preset."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from batchnorm_stats import randomise_batchnorm

import natv2.supernet.elastic as elastic_mod
import natv2.supernet.network as network_mod
from natv2.space import ENCODINGS, WIDTHS, SearchSpace
from natv2.supernet import (
    build_supernet,
    config_for_encoding,
    load_subnet,
    materialize,
    save_subnet,
)
from natv2.supernet.config import SupernetConfig, make_divisible, parse_supernet_name

SUPERNET_CLASSES = tuple(
    cls
    for mod in (elastic_mod, network_mod)
    for _, cls in inspect.getmembers(mod, inspect.isclass)
    if issubclass(cls, torch.nn.Module) and cls.__module__ == mod.__name__
)


def randomised(net):
    """Give BatchNorm statistics and kernel transforms non-trivial values, as training would."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return randomise_batchnorm(net, gen).eval()


@pytest.fixture(scope="module", params=ENCODINGS)
def family(request):
    encoding = request.param
    nets = {
        w: randomised(build_supernet(config_for_encoding(encoding, preset="tiny", width=w), seed=1))
        for w in WIDTHS
    }
    return encoding, nets


def subnets_under_test(encoding):
    space = SearchSpace(encoding)
    vectors = list(space.sample(50, np.random.default_rng(5)))
    return [space.decode(v) for v in vectors] + [space.maximal(), space.minimal()]


def test_materialize_matches_supernet_and_rebuilds(family, tmp_path):
    encoding, nets = family
    gen = torch.Generator().manual_seed(2)
    for i, arch in enumerate(subnets_under_test(encoding)):
        net = nets[arch.width]
        net.set_active(arch)
        x = torch.randn(4, 3, arch.resolution, arch.resolution, generator=gen)
        sub = materialize(net, arch)
        assert not sub.training
        assert not any(isinstance(m, SUPERNET_CLASSES) for m in sub.modules())
        with torch.no_grad():
            ref = net(x)
            out = sub(x)
        assert out.shape == (4, net.config.num_classes)
        assert (out - ref).abs().max().item() <= 1e-5, arch.id
        if i % 10 == 0:  # save/rebuild round trip without the supernet
            save_subnet(sub, tmp_path / arch.id)
            again = load_subnet(tmp_path / arch.id)
            with torch.no_grad():
                assert torch.equal(again(x), out)


def test_materialised_module_holds_only_active_weights():
    cfg = config_for_encoding("exits+parallel", preset="tiny", width=1.0)
    net = build_supernet(cfg)
    space = SearchSpace("exits+parallel", widths=(1.0,))
    small = materialize(net, space.minimal())
    big = materialize(net, space.decode(space.encode(space.maximal())))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(big) < count(net)


def test_reorder_channels_keeps_the_maximal_subnet_function():
    cfg = config_for_encoding("parallel", preset="tiny", width=1.0, dense_skips=True)
    net = randomised(build_supernet(cfg, seed=3))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        net.reorder_channels()
        after = net(x)
    scale = before.abs().max().item()
    assert (before - after).abs().max().item() <= 1e-5 * scale
    irb = next(net.irbs())
    importance = irb.project_conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


def test_forward_exits_and_training_step():
    cfg = config_for_encoding("exits", preset="tiny", width=1.0, num_classes=7)
    net = build_supernet(cfg)
    space = SearchSpace("exits", widths=(1.0,))
    arch = space.decode([1, 0, 2, *[5] * 20])  # exit after stage 3
    net.set_active(arch)
    x = torch.randn(3, 3, 52, 52)
    outs = net.forward_exits(x)
    assert len(outs) == 3 and all(o.shape == (3, 7) for o in outs)
    net.train()
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2]))
    loss.backward()
    grads = [p.grad for p in net.exits["3"].parameters()]
    assert all(g is not None for g in grads)
    assert all(p.grad is None for p in net.exits["5"].parameters())


def test_set_active_rejects_foreign_arch():
    net = build_supernet(config_for_encoding("baseline", preset="tiny", width=1.0))
    with pytest.raises(ValueError, match=r"width 1\.2"):
        net.set_active(SearchSpace("baseline").maximal())
    with pytest.raises(ValueError, match="no parallel branches"):
        net.set_active(SearchSpace("parallel", widths=(1.0,)).maximal())


def test_presets_and_names():
    assert make_divisible(16 * 1.2) == 24 and make_divisible(960 * 1.2) == 1152
    ofa = SupernetConfig(preset="ofa-mbv3", width=1.0)
    assert ofa.stage_channels == (24, 40, 80, 112, 160)
    assert ofa.exit_channels(4) == (960, 1280)
    assert parse_supernet_name("ofa-mbv3-w1.2") == ("ofa-mbv3", (1.2,))
    assert parse_supernet_name("tiny") == ("tiny", WIDTHS)


def test_materialised_subnet_exports_to_onnx(tmp_path):
    onnx = pytest.importorskip("onnx")
    cfg = config_for_encoding("exits+parallel", preset="tiny", width=1.0, dense_skips=True)
    net = build_supernet(cfg)
    space = SearchSpace("exits+parallel", widths=(1.0,))
    arch = space.decode(space.sample(1, np.random.default_rng(0))[0])
    sub = materialize(net, arch).eval()
    path = tmp_path / "m.onnx"
    x = torch.randn(1, 3, arch.resolution, arch.resolution)
    torch.onnx.export(sub, (x,), str(path), opset_version=18, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
