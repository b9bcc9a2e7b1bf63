"""int8 TFLite export checked by the real TensorFlow Lite Micro interpreter (``tflite`` extra).

Three subnets of the ``tiny`` preset (width 1.0), each trained 60 AdamW steps on ``digits`` from
a fixed seed (a few seconds each), so that predictions are real (an untrained subnet's logits
are nearly equal and its argmax is rounding noise, which would make agreement meaningless):

* ``se``: baseline encoding, exit 5, resolution 48: IRBs with squeeze-excite and hardswish;
* ``strided``: exits encoding, exit 3, resolution 52 (odd-sized maps at stride-2 levels);
* ``dense``: parallel encoding with dense skips, every level's first block all three branches
  (strided pointwise convolutions and max-pools).

Each is exported through ``export_folder`` as ``natv2 export`` does for the int8
``microcontroller-profile``; the file must be fully int8, carry no PAD op, allocate in TFLM in the
arena the report names (and not in one byte less), and TFLM must agree with onnxruntime int8 on at
least 95 % of the test images. TFLM's activation arena is compared with natv2's peak SRAM
figure (equal on these three). The module fixture takes about 80 s on two shared cores: most of
it is litert-torch's conversion (torch.export and decompositions, 10-20 s a subnet).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from batchnorm_stats import randomise_batchnorm
from torch import nn

from natv2.device_profiles import load_profile
from natv2.errors import Natv2Error
from natv2.export.folder import export_folder
from natv2.export.report import summary
from natv2.export.tflite import TFLITE_FILE
from natv2.space import Arch, SearchSpace
from natv2.supernet.config import config_for_encoding
from natv2.supernet.elastic import conv_bias
from natv2.supernet.materialize import save_subnet
from natv2.supernet.plain import SqueezeExcite, Subnet

pytest.importorskip("litert_torch", reason='needs pip install "natv2[tflite]"')
pytest.importorskip("tflite_micro", reason='needs pip install "natv2[tflite]"')

from natv2.export.tflite import (
    mirrored_module,
    read_tflite,
)
from natv2.export.tflm import TflmRunner, _Prober

STEPS = 60
#: the cost model's TFLM arena is over TFLM's own by at most this many bytes (profiling/cost.py)
TFLM_TOLERANCE = 12
#: the cost model's TFLite file size is over the file by at most this many bytes (cost.py)
TFLITE_FILE_TOLERANCE = 512


def _arch(encoding: str, resolution: int, exit_: int, pick, seed: int) -> Arch:
    space = SearchSpace(encoding, widths=(1.0,))
    rng = np.random.default_rng(seed)
    for vector in space.sample(400, rng):
        arch = space.decode(vector)
        arch = space.decode(space.encode(Arch(resolution, 1.0, exit_, arch.levels)))
        if pick(arch):
            return arch
    raise AssertionError("no sampled arch has the wanted features")


def _all_branches_first(arch: Arch) -> Arch:
    """``arch`` with all three branches in the first level of every stage (the strided one)."""
    levels = [
        replace(b, branches=7) if b is not None and i % 4 == 0 else b
        for i, b in enumerate(arch.levels)
    ]
    return Arch(arch.resolution, arch.width, arch.exit, tuple(levels))


CASES = {
    "se": ("baseline", 48, 5, False),
    "strided": ("exits", 52, 3, False),
    "dense": ("parallel", 48, 5, True),
}


def _build(name: str) -> Subnet:
    encoding, resolution, exit_, dense = CASES[name]
    cfg = config_for_encoding(encoding, preset="tiny", width=1.0, num_classes=10, dense_skips=dense)
    if name == "dense":
        space = SearchSpace(encoding, widths=(1.0,))
        deep = lambda a: max(len(a.active_blocks(s)) for s in range(5)) == 4  # noqa: E731
        arch = _arch(encoding, resolution, exit_, deep, 3)
        arch = space.decode(space.encode(_all_branches_first(arch)))
    else:
        arch = _arch(encoding, resolution, exit_, lambda a: a.exit == exit_, 3)
    torch.manual_seed(0)
    return Subnet(arch, cfg)


def _train(net: Subnet, data, resolution: int) -> Subnet:
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=STEPS)
    net.train()
    n = len(data.train)
    for _ in range(STEPS):
        idx = torch.randint(0, n, (64,), generator=gen).tolist()
        items = [data.train[i] for i in idx]
        x = data.prepare_batch(torch.stack([x for x, _ in items]), resolution, train=True)
        y = torch.tensor([int(y) for _, y in items])
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    """name -> (module, report, folder, seconds to export)."""
    profile = load_profile("microcontroller-profile")
    out = {}
    for name in CASES:
        net = _build(name)
        _train(net, digits, net.arch.resolution)
        folder = tmp_path_factory.mktemp(name) / "export"
        t0 = time.perf_counter()
        report = export_folder(
            net,
            folder,
            arch=net.arch,
            save_module=functools.partial(save_subnet, net),
            cost_config=net.config,
            profile=profile,
            dataset=digits,
            latency_runs=0,
            calibration_images=200,
        )
        out[name] = (net, report, folder, time.perf_counter() - t0)
    return out


def test_the_three_subnets_hold_what_they_stand_for():
    se, strided, dense = (_build(n) for n in CASES)
    assert any(isinstance(m, SqueezeExcite) for m in se.modules())
    assert any(isinstance(m, nn.Hardswish) for m in se.modules())
    assert strided.arch.exit == 3 and strided.arch.resolution == 52
    assert dense.config.dense_skips and max(len(dense.arch.active_blocks(s)) for s in range(5)) == 4
    strided_1x1 = [
        m for m in dense.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    assert any(m.stride == (2, 2) for m in strided_1x1)
    assert any(isinstance(m, nn.MaxPool2d) for m in dense.modules())


@pytest.mark.parametrize("name", list(CASES))
def test_mirrored_layout_gives_the_module_outputs(name):
    """The layout without PAD ops is exact: mirrored(rotated x) == module(x), per stage too,
    on an untrained subnet with random BatchNorm statistics (large, varied activations)."""
    net = _build(name).eval()
    gen = torch.Generator().manual_seed(1)
    randomise_batchnorm(net, gen, bias=False)
    r = net.arch.resolution
    x = torch.randn(3, 3, r, r, generator=gen)
    mirrored = mirrored_module(net, r)
    with torch.no_grad():
        for a, b in zip(net.features(x), mirrored.features(x.flip([2, 3])), strict=True):
            assert (a - b.flip([2, 3])).abs().max() <= 1e-4 * max(1.0, a.abs().max().item())
        a, b = net(x), mirrored(x.flip([2, 3]))
    assert (a - b).abs().max() <= 1e-4 * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("name", list(CASES))
def test_int8_tflite_is_fully_int8_and_runs_in_tflm(name, exported, digits):
    net, result, folder, seconds = exported[name]
    report = result.to_dict()
    data = (folder / TFLITE_FILE).read_bytes()
    graph = read_tflite(data)
    tfl, tflm = report["tflite"], report["tflm"]
    # fully int8: int8 activations (the arena holds nothing else), int8 per-channel symmetric
    # weights, int32 biases, int8 I/O with its quantization recorded
    assert graph.fully_int8 and tfl["fully_int8"]
    assert set(graph.activation_dtypes) == {"INT8"}
    assert set(graph.tensor_dtypes) == {"INT8", "INT32"}
    assert set(graph.weight_quantization) == {"INT8 per-channel symmetric"}
    assert graph.input.dtype == graph.output.dtype == "INT8"
    assert graph.input.shape == (1, net.arch.resolution, net.arch.resolution, 3)
    assert tfl["input"]["scale"] > 0 and tfl["output"]["scale"] > 0
    # what TFLM lacks or what costs memory: none
    assert not {"PAD", "PADV2", "TRANSPOSE", "QUANTIZE", "DEQUANTIZE"} & set(graph.ops)
    assert graph.ops["REVERSE_V2"] == 1  # the 180-degree rotation of the mirrored layout
    assert graph.offset_buffers == 0
    assert tfl["float_max_abs_diff_vs_pytorch"] <= 1e-3
    # the arena: allocates at the reported size, not one byte below
    arena = tflm["arena_bytes"]
    assert tflm["activations_bytes"] > 0 and tflm["persistent_bytes"] > 0
    assert tflm["activations_bytes"] + tflm["persistent_bytes"] == tflm["recorded_total_bytes"]
    assert arena >= tflm["recorded_total_bytes"]
    path = folder / TFLITE_FILE
    prober = _Prober(path)
    try:
        assert prober.allocates(arena) and not prober.allocates(arena - 1)
    finally:
        prober.close()
    TflmRunner(data, arena)  # allocates in this process too
    # TFLM's activation part (greedy lifetime planning of the converted graph) against natv2's
    # peak SRAM (MCUNet-style, from the ONNX graph and the cost model): equal on these three;
    # the one extra buffer of the layout is REVERSE_V2's copy of the int8 input, live with
    # the input itself, so the rule held here is max(natv2 peak, 2 x input bytes)
    peak = report["memory"]["peak_sram_bytes"]
    assert peak["onnx_graph"] == peak["cost_model"]
    input_bytes = int(np.prod(graph.input.shape))
    assert tflm["activations_bytes"] == max(peak["onnx_graph"], 2 * input_bytes)
    assert tflm["natv2_peak_sram_bytes"] == peak
    # the cost model's TFLM figure: activations equal, the arena an upper bound within tolerance
    model = report["memory"]["tflm_arena_bytes"]
    assert model["tflm"] == arena
    assert model["cost_model"] - model["cost_model_persistent"] == tflm["activations_bytes"]
    assert 0 <= model["cost_model"] - arena <= TFLM_TOLERANCE, (model, arena)
    assert model["cost_model_persistent"] >= tflm["persistent_bytes"]
    # the cost model's TFLite file size (what a TFLM profile's flash budget is judged on)
    size = report["memory"]["tflite_bytes"]
    assert size["file"] == len(data) == tfl["file_bytes"]
    assert 0 <= size["cost_model"] - len(data) <= TFLITE_FILE_TOLERANCE, size
    # TFLM agrees with onnxruntime int8 on the same test images
    acc = tflm["accuracy"]
    assert acc["images"] == report["accuracy"]["images"] == len(digits.test)
    assert acc["agreement_with_onnx_int8"] >= 0.95, acc
    assert acc["top1"] >= 0.5, acc  # trained: far above the 10 % of chance
    assert report["files"][TFLITE_FILE]["bytes"] == len(data) == tfl["file_bytes"]
    print(
        f"\n{name}: {net.arch.id} tflite {len(data):,} B, onnx int8 "
        f"{report['int8']['file_bytes']:,} B; TFLM arena {arena:,} B (activations "
        f"{tflm['activations_bytes']:,} + persistent {tflm['persistent_bytes']:,}; cost model "
        f"{model['cost_model']:,} = {model['cost_model'] - model['cost_model_persistent']:,} + "
        f"{model['cost_model_persistent']:,}); natv2 peak "
        f"SRAM {report['memory']['peak_sram_bytes']['onnx_graph']:,} B (cost model "
        f"{report['memory']['peak_sram_bytes']['cost_model']:,}); TFLM top-1 "
        f"{acc['top1']:.3f}, onnx int8 {report['accuracy']['int8_top1']:.3f}, agreement "
        f"{acc['agreement_with_onnx_int8']:.3f}; export {seconds:.1f} s"
    )
    text = summary(result)
    assert "TFLM arena" in text and "agrees with onnxruntime int8" in text
    print(text)


# more subnets, untrained, with random BatchNorm statistics (so no BatchNorm step folds away):
# parallel levels with all three branches and dense skips, an early exit, width 1.2
MORE = {
    "parallel-dense": ("parallel", True, 1.0, 56, 5, 7),
    "exits+parallel-x2": ("exits+parallel", False, 1.0, 48, 2, 9),
    "baseline-w12-dense": ("baseline", True, 1.2, 56, 5, 15),
}


def _random_bn(net: Subnet) -> Subnet:
    return randomise_batchnorm(net, torch.Generator().manual_seed(1)).eval()


@pytest.mark.parametrize("name", list(MORE))
def test_cost_model_tflm_arena_on_more_subnets(name, digits, tmp_path):
    """natv2's TFLM figure against TFLM's arena (find_arena) on three more subnets; the one
    with dense skips is exported for the TFLM profile, whose verdict judges the measured arena."""
    from natv2.export.tflite import convert_int8
    from natv2.export.tflm import find_arena
    from natv2.profiling.cost import subnet_cost

    encoding, dense, width, resolution, exit_, seed = MORE[name]
    space = SearchSpace(encoding, widths=(width,))
    arch = space.decode(space.sample(1, np.random.default_rng(seed))[0])
    arch = space.decode(space.encode(Arch(resolution, width, exit_, arch.levels)))
    if name == "parallel-dense":
        arch = space.decode(space.encode(_all_branches_first(arch)))
    cfg = config_for_encoding(
        encoding, preset="tiny", width=width, num_classes=10, dense_skips=dense
    )
    torch.manual_seed(0)
    net = _random_bn(Subnet(arch, cfg))
    cost = subnet_cost(arch, cfg, "int8")
    if name != "baseline-w12-dense":
        gen = torch.Generator().manual_seed(0)
        calib = [torch.randn(4, 3, resolution, resolution, generator=gen)]
        model = convert_int8(net, resolution, calib).model
        arena = find_arena(model)
        assert cost.tflm_arena_bytes - cost.tflm_persistent_bytes == arena.head_bytes
        assert 0 <= cost.tflm_arena_bytes - arena.arena_bytes <= TFLM_TOLERANCE
        assert 0 <= cost.tflite_bytes - len(model) <= TFLITE_FILE_TOLERANCE
        return
    profile = load_profile("mcu-nano-profile")
    assert profile.runtime == "tflm"
    report = export_folder(
        net,
        tmp_path / "export",
        arch=arch,
        save_module=lambda f: save_subnet(net, f),
        cost_config=cfg,
        profile=profile,
        dataset=digits,
        latency_runs=0,
        calibration_images=16,
    ).to_dict()
    arena = report["tflm"]["arena_bytes"]
    assert report["memory"]["tflm_arena_bytes"]["cost_model"] == cost.tflm_arena_bytes
    assert 0 <= cost.tflm_arena_bytes - arena <= TFLM_TOLERANCE
    (sram,) = [c for c in report["verdict"]["checks"] if c["budget_key"] == "max_peak_sram_bytes"]
    assert sram["name"] == "tflm_arena_bytes" and sram["value"] == arena
    assert "TFLM arena (measured" in report["verdict"]["sram_basis"]
    # and its flash budget on the TFLite file, which the cost model bounds from above
    (flash,) = [c for c in report["verdict"]["checks"] if c["budget_key"] == "max_flash_bytes"]
    file_bytes = report["tflite"]["file_bytes"]
    assert flash["name"] == "tflite_bytes" and flash["value"] == file_bytes
    assert 0 <= cost.tflite_bytes - file_bytes <= TFLITE_FILE_TOLERANCE


def test_tflite_runs_where_asked_and_fails_clearly_without_the_extra(digits, tmp_path, monkeypatch):
    net = _build("se").eval()
    kwargs = {
        "arch": net.arch,
        "save_module": lambda f: save_subnet(net, f),
        "latency_runs": 0,
        "dataset": digits,
    }
    # a float profile writes no TFLite file unless asked
    report = export_folder(
        net, tmp_path / "float", profile=load_profile("host-cpu-profile"), **kwargs
    ).to_dict()
    assert report["tflite"] is None and report["tflm"] is None
    assert not (tmp_path / "float" / TFLITE_FILE).exists()
    import natv2.export.tflite as tflite_mod

    monkeypatch.setattr(tflite_mod, "tflite_available", lambda: False)
    with pytest.raises(Natv2Error, match=r'pip install "natv2\[tflite\]"'):
        export_folder(net, tmp_path / "asked", tflite=True, **kwargs)
    # an int8 profile without the extra: the ONNX files, and the report says why no TFLite
    result = export_folder(
        net, tmp_path / "mcu", profile=load_profile("microcontroller-profile"), **kwargs
    )
    report = result.to_dict()
    assert "not installed" in report["tflite"]["note"] and report["tflm"] is None
    assert result.tflite is None and "not installed" in summary(result)
    assert not (tmp_path / "mcu" / TFLITE_FILE).exists()


def test_cli_export_writes_the_tflite_file_and_report_keys(cli, supernet_ckpt, tmp_path):
    encoding = "exits+parallel"
    space = SearchSpace(encoding, widths=(1.0,))
    vector = ",".join(map(str, space.sample(1, np.random.default_rng(11))[0]))
    out = tmp_path / "exp"
    args = ["export", "--supernet", supernet_ckpt, "--arch", vector, "--out", out]
    args += ["--device", "microcontroller-profile", "--dataset", "digits", "--runs", "0"]
    r = cli(*args, "--limit", "40", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert (out / TFLITE_FILE).is_file()
    assert doc["tflite"]["fully_int8"] and doc["tflite"]["file"] == TFLITE_FILE
    for key in ("arena_bytes", "activations_bytes", "persistent_bytes", "persistent_parts"):
        assert doc["tflm"][key] > 0 if key != "persistent_parts" else doc["tflm"][key]
    assert doc["tflm"]["accuracy"]["images"] == 40
    assert 0.0 <= doc["tflm"]["accuracy"]["agreement_with_onnx_int8"] <= 1.0
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["tflm"]["arena_bytes"] == doc["tflm"]["arena_bytes"]
    assert on_disk["files"][TFLITE_FILE]["bytes"] == (out / TFLITE_FILE).stat().st_size
    # natv2 validate MODEL.tflite: the same arena
    v = cli(
        "validate",
        out / TFLITE_FILE,
        "--device",
        "microcontroller-profile",
        "--dataset",
        "digits",
        "--limit",
        "40",
        "--runs",
        "2",
        "--json",
    )
    assert v.code in (0, 1), v.err
    vd = v.json()
    # SRAM by the runtime: TinyEngine is judged on TFLM's activation plan, TFLM on its arena
    assert vd["peak_sram_bytes"] == doc["tflm"]["activations_bytes"]
    # flash by the profile's runtime: TinyEngine stores the constants (the ONNX graph's int8
    # flash plus the zero taps of the mirrored graph's 2x2 strided kernels), TFLM the file
    size = (out / TFLITE_FILE).stat().st_size
    assert vd["tflite_bytes"] == size and vd["flash_bytes"] == vd["tflite"]["deployed_bytes"]
    assert vd["flash_bytes"] >= doc["memory"]["flash_bytes"]["onnx_graph"]
    (flash,) = [c for c in vd["checks"] if c["budget_key"] == "max_flash_bytes"]
    assert flash["name"] == "flash_bytes" and flash["value"] == vd["flash_bytes"]
    nano = cli("validate", out / TFLITE_FILE, "--device", "mcu-nano-profile", "--json")
    assert nano.code in (0, 1), nano.err
    (flash,) = [c for c in nano.json()["checks"] if c["budget_key"] == "max_flash_bytes"]
    assert flash["name"] == "tflite_bytes" and flash["value"] == size
    assert nano.json()["peak_sram_bytes"] == doc["tflm"]["arena_bytes"]
    assert vd["macs"] == doc["tflite"]["macs"] and vd["accuracy"]["images"] == 40
    assert vd["accuracy"]["top1"] == doc["tflm"]["accuracy"]["top1"]
    text = cli("validate", out / TFLITE_FILE, "--device", "microcontroller-profile")
    assert text.code in (0, 1) and "TFLM arena" in text.out
    # a file that is not a flatbuffer: one clear line, exit 2
    bad = tmp_path / "junk.tflite"
    bad.write_bytes(b"not a flatbuffer")
    r = cli("validate", bad, "--device", "microcontroller-profile")
    assert r.code == 2 and "not a TFLite flatbuffer" in r.err and "Traceback" not in r.err
    # a flatbuffer whose structure does not hold together (ops reading missing tensors),
    # and one TFLM cannot run as natv2 deploys it (weights in offset buffers): one clear line
    from natv2.export.tflite import _model_object, _pack

    for name, damage, needle in [
        (
            "broken",
            lambda m: setattr(m.subgraphs[0], "tensors", m.subgraphs[0].tensors[:2]),
            "malformed",
        ),
        ("offset", lambda m: setattr(m.buffers[1], "offset", 1), "cannot run this file"),
    ]:
        model = _model_object((out / TFLITE_FILE).read_bytes())
        damage(model)
        broken = tmp_path / f"{name}.tflite"
        broken.write_bytes(_pack(model))
        r = cli("validate", broken, "--device", "microcontroller-profile")
        assert r.code == 2 and needle in r.err, (name, r.err)
        assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err


def _tflm_agreement(net: nn.Module, digits, resolution: int) -> float:
    """Share of 200 test images on which TFLM's int8 file and the float module agree."""
    from natv2.export.tflite import convert_int8

    items = [digits.test[i] for i in range(200)]
    x = digits.prepare_batch(torch.stack([a for a, _ in items]), resolution, train=False)
    calib = [
        digits.prepare_batch(
            torch.stack([digits.train[i][0] for i in range(j, j + 50)]), resolution, train=False
        )
        for j in (0, 50)
    ]
    tfl = convert_int8(net, resolution, calib)
    from natv2.export.tflm import find_arena

    runner = TflmRunner(tfl.model, find_arena(tfl.model).arena_bytes)
    with torch.no_grad():
        ref = net(x).argmax(1).numpy()
    return float(np.mean(runner.outputs(x).argmax(1) == ref))


def test_a_dead_squeeze_excite_does_not_break_the_int8_file(digits, monkeypatch):
    """A squeeze-excite whose hidden units are dead for a subnet (ReLU output constant at ~0 on
    every calibration image) got a ~4e-12 scale, an overflowing int32 bias in the next conv and
    a gate of 0: a main-job front subnet ran at 10 % in TFLM against 94.7 % in float. The
    calibration ranges are widened (``widen_degenerate_ranges``); without that, this fails."""
    import natv2.export.tflite as tflite

    net = _train(_build("se"), digits, 48)
    se = next(m for m in net.modules() if isinstance(m, SqueezeExcite))
    with torch.no_grad():
        se.reduce.weight.zero_()
        conv_bias(se.reduce).fill_(1e-9)  # constant, nearly zero: what dead units calibrate to
        conv_bias(se.expand).fill_(3.0)  # the gate is then set by the expand bias alone
    assert _tflm_agreement(net, digits, 48) >= 0.9
    monkeypatch.setattr(tflite, "widen_degenerate_ranges", lambda qsvs: qsvs)
    assert _tflm_agreement(net, digits, 48) < 0.5


def test_a_dead_squeeze_excite_gets_no_degenerate_scale_in_the_onnx_int8_file(digits, monkeypatch):
    """The same dead squeeze-excite through onnxruntime's quantizer: the ONNX int8 file (what
    STM32Cube.AI compiles to integer kernels) gets the TFLite file's minimum range
    (``MinimumRealRange``), so no activation scale is ~1e-12 (onnxruntime itself runs that part
    in float between DequantizeLinear and QuantizeLinear on x86 and agrees either way, but an
    integer runtime would overflow the next conv's int32 bias as TFLM did)."""
    import natv2.export.quantize as quantize
    from natv2.export.onnx import ort_session, run_session, to_onnx

    net = _train(_build("se"), digits, 48)
    se = next(m for m in net.modules() if isinstance(m, SqueezeExcite))
    with torch.no_grad():
        se.reduce.weight.zero_()
        conv_bias(se.reduce).fill_(1e-9)
        conv_bias(se.expand).fill_(3.0)
    items = [digits.test[i] for i in range(200)]
    x = digits.prepare_batch(torch.stack([a for a, _ in items]), 48, train=False)
    calib = [
        digits.prepare_batch(
            torch.stack([digits.train[i][0] for i in range(j, j + 50)]), 48, train=False
        ).numpy()
        for j in (0, 50)
    ]
    with torch.no_grad():
        ref = net(x).argmax(1).numpy()

    def quantized() -> tuple[float, float]:
        """(agreement with the float module, smallest activation scale)"""
        model = quantize.quantize_int8(to_onnx(net, 48), calib)
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        scales = [
            float(inits[n.input[1]].min())
            for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits
        ]
        out = run_session(ort_session(model.SerializeToString(), threads=1), x)
        return float(np.mean(out.argmax(1) == ref)), min(scales)

    agree, smallest = quantized()
    assert agree >= 0.9 and smallest >= quantize.MIN_ACTIVATION_RANGE / 256
    monkeypatch.setattr(quantize, "MIN_ACTIVATION_RANGE", None)
    assert quantized()[1] < 1e-9  # what the floor prevents


@pytest.mark.parametrize("seed", [21, 22])
def test_a_data_fitted_layout_converts_and_costs_what_tflm_allocates(seed):
    """A supernet fitted to 28-px images (stride-1 stem, strides in stages 2 and 3): the
    mirrored layout is exact, the file is fully int8 without PAD ops, and the cost model's
    TFLM arena and file size hold as on OFA's layout."""
    from natv2.export.tflite import convert_int8
    from natv2.export.tflm import find_arena
    from natv2.profiling.cost import subnet_cost
    from natv2.supernet.config import layout_for

    layout = layout_for(28)
    cfg = config_for_encoding("exits+parallel", preset="tiny", width=1.0, **layout)
    space = SearchSpace("exits+parallel", widths=(1.0,), grid=cfg.resolutions)
    arch = space.decode(space.sample(1, np.random.default_rng(seed))[0])
    arch = space.decode(space.encode(_all_branches_first(arch)))
    torch.manual_seed(0)
    net = _random_bn(Subnet(arch, cfg))
    r = arch.resolution
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, r, r, generator=gen)
    with torch.no_grad():
        a, b = net(x), mirrored_module(net, r)(x.flip([2, 3]))
    assert (a - b).abs().max() <= 1e-4 * max(1.0, a.abs().max().item())
    model = convert_int8(net, r, [torch.randn(4, 3, r, r, generator=gen)]).model
    graph = read_tflite(model)
    assert graph.fully_int8 and not graph.problems()
    cost = subnet_cost(arch, cfg, "int8")
    arena = find_arena(model)
    assert cost.tflm_arena_bytes - cost.tflm_persistent_bytes == arena.head_bytes, arch.id
    assert 0 <= cost.tflm_arena_bytes - arena.arena_bytes <= TFLM_TOLERANCE, arch.id
    assert 0 <= cost.tflite_bytes - len(model) <= TFLITE_FILE_TOLERANCE, arch.id
