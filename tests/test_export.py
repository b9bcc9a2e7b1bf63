"""``natv2 export``: ONNX float/int8 export of plain subnets, its checks, report and CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from batchnorm_stats import randomise_batchnorm
from onnx import numpy_helper
from torch import nn

from natv2.data import load_dataset
from natv2.device_profiles import load_profile
from natv2.errors import Natv2Error
from natv2.export.folder import export_folder
from natv2.export.onnx import PARITY_RTOL, ort_session, run_session
from natv2.export.quantize import quantize_int8
from natv2.export.report import INT8_FILE, INT8_HOST_FILE, ExportReport, summary
from natv2.profiling.cost import subnet_cost
from natv2.profiling.counters import fvcore_macs, onnx_costs, params_after_bn_folding
from natv2.space import ENCODINGS, Arch, SearchSpace
from natv2.supernet import build_supernet, config_for_encoding, load_subnet, materialize
from natv2.supernet.checkpoint import save_supernets
from natv2.supernet.materialize import save_subnet
from natv2.supernet.plain import make_exit_head

TINY = {"preset": "tiny", "width": 1.0, "num_classes": 10}


def randomised(net):
    """Non-trivial BatchNorm statistics and affine terms, as training would leave them: the
    logits of an untrained supernet are tiny and would make parity trivially true."""
    randomise_batchnorm(net, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(50.0)
    return net.eval()


@pytest.fixture(scope="module")
def supernets():
    return {
        e: randomised(build_supernet(config_for_encoding(e, **TINY), seed=1)) for e in ENCODINGS
    }


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def some_arch(encoding: str, exit_: int | None = None, resolution: int = 48) -> Arch:
    space = SearchSpace(encoding, widths=(1.0,))
    arch = space.decode(space.sample(1, np.random.default_rng(7))[0])
    return space.decode(
        space.encode(
            Arch(resolution, 1.0, (exit_ or arch.exit) if space.has_exits else 5, arch.levels)
        )
    )


def saver(module):
    return lambda folder: save_subnet(module, folder)


def ort_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


# ------------------------------------------------------------------------------ float export


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_exports_checked_and_counted(encoding, supernets, tmp_path):
    exit_ = 3 if encoding.startswith("exits") else None  # an early-exit subnet
    arch = some_arch(encoding, exit_)
    net = materialize(supernets[encoding], arch).eval()
    out = tmp_path / "export"
    result = export_folder(
        net,
        out,
        arch=arch,
        save_module=saver(net),
        encoding=encoding,
        vector=SearchSpace(encoding).encode(arch).tolist(),
        cost_config=net.config,
        latency_runs=0,
    )
    report = result.to_dict()
    # report.json is the report's document; --json adds where the folder is
    assert json.loads((out / "report.json").read_text()) == report
    assert result.to_json() == {**report, "out": str(out)}
    assert sorted(p.name for p in out.iterdir()) == [
        "arch.json",
        "model.onnx",
        "model.pt",
        "report.json",
    ]
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert not any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
    )  # self-contained
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert [o.name for o in model.graph.output] == ["logits"]

    # parity, checked here independently of the exporter's own check, at batch 1 and 7
    gen = torch.Generator().manual_seed(3)
    for batch in (1, 7):
        x = torch.randn(batch, 3, arch.resolution, arch.resolution, generator=gen)
        with torch.no_grad():
            ref = net(x).numpy()
        got = ort_logits(out / "model.onnx", x)
        assert np.abs(ref).max() > 1.0  # non-trivial logits
        assert np.abs(got - ref).max() <= PARITY_RTOL * max(1.0, np.abs(ref).max())
    for case in report["parity"]["float"]:
        assert case["passed"] is True and case["max_abs_diff"] <= case["tolerance"]
    assert [c["batch"] for c in report["parity"]["float"]] == [1, 7]

    meta = {p.key: p.value for p in model.metadata_props}
    shape = (1, 3, arch.resolution, arch.resolution)
    macs = int(meta["macs"])
    assert macs == fvcore_macs(net, shape) == onnx_costs(model).macs == result.counts.macs_graph
    assert macs == subnet_cost(arch, net.config).macs
    assert meta["encoding"] == encoding and meta["arch_id"] == arch.id
    assert json.loads(meta["arch_vector"]) == [int(v) for v in SearchSpace(encoding).encode(arch)]
    assert meta["natv2_version"] and int(meta["params"]) == sum(p.numel() for p in net.parameters())
    p = report["params"]
    assert p["graph"] == p["folded"] == params_after_bn_folding(net) == onnx_costs(model).params
    assert p["module"] - p["bn_removed"] == p["graph"] and p["bn_removed"] > 0
    assert (
        report["memory"]["flash_bytes"]["onnx_graph"]
        == (report["memory"]["flash_bytes"]["cost_model"])
    )
    assert (
        report["memory"]["peak_sram_bytes"]["onnx_graph"]
        == (report["memory"]["peak_sram_bytes"]["cost_model"])
    )
    # model.pt + arch.json rebuild the module without the supernet
    rebuilt = load_subnet(out)
    x = torch.randn(2, 3, arch.resolution, arch.resolution)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), net(x))
    # the report lists the sha256 of every other file
    for name, entry in report["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["sha256"]


class TwoExitEnsemble(nn.Module):
    """A generic multi-exit module (not natv2.aep, and no cost model of its own): a subnet plus
    an exit head re-attached after an earlier stage, logits = weighted sum of both exits."""

    weights: torch.Tensor  # a buffer (registered in __init__)

    def __init__(self, subnet) -> None:
        super().__init__()
        self.subnet = subnet
        self.early = make_exit_head(subnet.config, subnet.arch.exit - 2)
        self.register_buffer("weights", torch.tensor([0.3, 0.7]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.subnet.features(x)
        early = self.early(feats[-2])
        final = self.subnet.head(feats[-1])
        return self.weights[0] * early + self.weights[1] * final


def test_multi_exit_ensemble_exports_as_one_graph(supernets, tmp_path):
    arch = some_arch("exits+parallel", exit_=4)
    sub = materialize(supernets["exits+parallel"], arch)
    model = randomised(TwoExitEnsemble(sub))

    def save(folder: Path) -> None:
        torch.save(model.state_dict(), folder / "model.pt")
        (folder / "arch.json").write_text(json.dumps({"format": "test", "arch": arch.to_dict()}))

    result = export_folder(model, tmp_path / "aep", arch=arch, save_module=save, latency_runs=0)
    report = result.to_dict()
    assert result.cost_model is None and result.verdict is None
    graph = onnx.load(str(tmp_path / "aep" / "model.onnx"))
    assert len(graph.graph.output) == 1
    assert report["module"] == "TwoExitEnsemble" and all(
        c["passed"] is True for c in report["parity"]["float"]
    )
    # both heads are in the graph: the MACs are the subnet's plus the early head's
    early_head = fvcore_macs(model.early, (1, sub.config.stage_channels[2], 3, 3))
    assert report["macs"]["cost_model"] is None
    assert report["macs"]["onnx_graph"] == report["macs"]["fvcore"]
    assert report["macs"]["onnx_graph"] == subnet_cost(arch, sub.config).macs + early_head
    assert report["params"]["graph"] == params_after_bn_folding(model)


# ------------------------------------------------------------------------------ failures


class Planted(nn.Module):
    """A module that computes something else while being exported."""

    def __init__(self, subnet) -> None:
        super().__init__()
        self.subnet = subnet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.subnet(x)
        if torch.onnx.is_in_onnx_export():
            out = out.flip(1)  # the classes in reverse order
        return out


def test_planted_mismatch_fails_parity_and_leaves_no_trace(supernets, tmp_path):
    arch = some_arch("baseline")
    model = Planted(materialize(supernets["baseline"], arch))
    kwargs = {"arch": arch, "save_module": saver(model.subnet), "latency_runs": 0}

    fresh = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(Natv2Error, match="parity check failed"):
        export_folder(model, fresh, **kwargs)
    assert not (tmp_path / "new").exists()  # neither the folder nor the parents it made

    old = tmp_path / "old"
    old.mkdir()
    (old / "model.onnx").write_bytes(b"previous export")
    (old / "report.json").write_text("{}")
    with pytest.raises(Natv2Error, match="parity check failed"):
        export_folder(model, old, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # no temporary folder left
    assert (old / "model.onnx").read_bytes() == b"previous export"
    assert sorted(p.name for p in old.iterdir()) == ["model.onnx", "report.json"]

    # the honest module replaces the old export in one step
    export_folder(model.subnet, old, **kwargs)
    assert (old / "model.onnx").read_bytes() != b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_a_folder_that_is_not_an_export_is_never_replaced(supernets, tmp_path):
    arch = some_arch("baseline")
    net = materialize(supernets["baseline"], arch)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(Natv2Error, match="not an export folder"):
        export_folder(net, tmp_path, arch=arch, save_module=saver(net), latency_runs=0)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------ int8


def test_int8_export_on_digits(supernets, digits, tmp_path):
    space = SearchSpace("baseline")
    big = space.maximal()
    arch = Arch(48, 1.0, 5, big.levels)  # the largest tiny subnet, at the lowest resolution
    net = materialize(supernets["baseline"], arch)
    profile = load_profile("microcontroller-profile")
    out = tmp_path / "int8"
    result = export_folder(
        net,
        out,
        arch=arch,
        save_module=saver(net),
        encoding="baseline",
        vector=space.encode(arch).tolist(),
        cost_config=net.config,
        profile=profile,
        dataset=digits,
        calibration_images=64,
        latency_runs=3,
        latency_warmup=1,
    )
    report = result.to_dict()
    float_bytes = (out / "model.onnx").stat().st_size
    int8_bytes = (out / INT8_FILE).stat().st_size
    assert float_bytes >= 3 * int8_bytes
    assert report["int8"]["size_ratio"] == pytest.approx(float_bytes / int8_bytes)
    acc = report["accuracy"]
    assert acc["images"] == len(digits.test) and acc["split"] == "test"
    for key in ("float_top1", "int8_top1", "int8_float_agreement"):
        assert 0.0 <= acc[key] <= 1.0
    int8 = onnx.load(str(out / INT8_FILE))
    onnx.checker.check_model(int8, full_check=True)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
    meta = {p.key: p.value for p in int8.metadata_props}
    assert meta["dtype"] == "int8" and meta["profile"] == "microcontroller-profile"
    assert report["macs"]["int8_graph"] == report["macs"]["onnx_graph"]
    assert report["params"]["int8_graph"] == report["params"]["graph"]
    # flash and peak at the profile's dtype, from the graph counter and the cost model
    assert report["memory"]["dtype"] == "int8"
    assert (
        report["memory"]["flash_bytes"]["onnx_graph"]
        == subnet_cost(arch, net.config, "int8").flash_bytes
    )
    assert report["verdict"]["deployed_file"] == INT8_FILE
    assert {c["name"] for c in report["verdict"]["checks"]} >= {"macs", "flash_bytes"}
    assert report["latency"]["latency_ms"] == pytest.approx(report["latency"]["estimate_ms"])
    assert set(report["latency"]["host"]) == {"float", "int8", "int8_host"}
    assert len(report["parity"]["float"]) == 4  # random and real images, batch 1 and 7
    text = summary(result)
    assert "int8" in text and "top-1" in text
    assert result.verdict is not None and f"on {profile.name}" in text
    assert ("verdict    pass" in text) == result.verdict.passed
    check_host_file(out, result)


def activation_zero_point_dtypes(model: onnx.ModelProto) -> set:
    """The dtypes of every QuantizeLinear zero point: the type of the activations."""
    inits = {t.name: t for t in model.graph.initializer}
    return {
        numpy_helper.to_array(inits[n.input[2]]).dtype
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
    }


def int8_weights(model: onnx.ModelProto) -> list[bytes]:
    """The int8 initializers (quantized weights), in a name-independent order."""
    arrays = (numpy_helper.to_array(t) for t in model.graph.initializer)
    return sorted(a.tobytes() for a in arrays if a.dtype == np.int8 and a.size > 1)


def check_host_file(out: Path, result: ExportReport) -> None:
    """An int8 export also holds the host file: uint8 activations, 7-bit weights, its top-1,
    agreement and latency reported; the deployed file stays the int8 one."""
    report = result.to_dict()
    host = onnx.load(str(out / INT8_HOST_FILE))
    int8 = onnx.load(str(out / INT8_FILE))
    onnx.checker.check_model(host, full_check=True)
    assert activation_zero_point_dtypes(host) == {np.dtype(np.uint8)}
    assert activation_zero_point_dtypes(int8) == {np.dtype(np.int8)}
    # the host file's weights: 7 bits (reduce_range, for x86 without VNNI), the int8 file's 8
    assert max(np.abs(np.frombuffer(w, np.int8)).max() for w in int8_weights(host)) <= 64
    assert max(np.abs(np.frombuffer(w, np.int8)).max() for w in int8_weights(int8)) > 64
    meta = {p.key: p.value for p in host.metadata_props}
    assert meta["dtype"] == "int8" and meta["activations"] == "uint8"
    assert report["int8_host"]["file"] == INT8_HOST_FILE
    assert report["int8_host"]["file_bytes"] == (out / INT8_HOST_FILE).stat().st_size
    assert report["files"][INT8_HOST_FILE]["bytes"] == report["int8_host"]["file_bytes"]
    acc = report["accuracy"]
    for key in ("int8_host_top1", "int8_host_float_agreement"):
        assert 0.0 <= acc[key] <= 1.0
    # the reported figures are the file's: recompute its top-1 on the same test images
    sess = ort.InferenceSession(str(out / INT8_HOST_FILE), providers=["CPUExecutionProvider"])
    data = load_dataset(report["dataset"])
    r = report["resolution"]
    xs = torch.stack([data.test[i][0] for i in range(acc["images"])])
    ys = np.array([int(data.test[i][1]) for i in range(acc["images"])])
    pred = sess.run(None, {"input": data.prepare_batch(xs, r, train=False).numpy()})[0].argmax(1)
    assert acc["int8_host_top1"] == pytest.approx(float(np.mean(pred == ys)))
    lat = report["latency"]["host"]["int8_host"]
    assert lat["runs"] > 0 and lat["median_ms"] > 0 and lat["batch"] == 1
    assert report["verdict"]["deployed_file"] == INT8_FILE
    text = summary(result)
    assert "latency    int8 host: median" in text and INT8_HOST_FILE in text
    assert "int8 host " in text.split("top-1", 1)[1].splitlines()[0]


def test_quantize_int8_activation_types(supernets, digits):
    arch = some_arch("baseline")
    net = materialize(supernets["baseline"], arch)
    from natv2.export.onnx import to_onnx

    model = to_onnx(net, arch.resolution)
    calib = [digits.prepare_batch(torch.stack([digits.train[i][0] for i in range(16)]), 48, False)]
    batches = [b.numpy() for b in calib]
    default = quantize_int8(model, batches)
    host = quantize_int8(model, batches, activations="uint8")
    assert activation_zero_point_dtypes(default) == {np.dtype(np.int8)}
    assert activation_zero_point_dtypes(host) == {np.dtype(np.uint8)}
    with pytest.raises(Natv2Error, match="activations"):
        quantize_int8(model, batches, activations="int4")


def test_compact_qdq_keeps_outputs_bit_identical_and_shrinks_the_file(
    supernets, digits, monkeypatch
):
    import natv2.export.quantize as quantize
    from natv2.export.onnx import to_onnx

    arch = some_arch("baseline")
    model = to_onnx(materialize(supernets["baseline"], arch), arch.resolution)
    x = digits.prepare_batch(torch.stack([digits.train[i][0] for i in range(16)]), 48, False)
    monkeypatch.setattr(
        quantize, "compact_qdq", lambda m: m
    )  # the file as quantize_static wrote it
    raw = quantize.quantize_int8(model, [x.numpy()])
    monkeypatch.undo()
    compact = quantize.compact_qdq(raw)
    g = compact.graph
    assert not g.value_info and all(n.name == "" for n in g.node)
    io = {v.name for v in g.input} | {v.name for v in g.output}
    tensors = {i.name for i in g.initializer} | {o for n in g.node for o in n.output}
    assert max(len(name) for name in tensors - io) <= 6  # short ids t0, t1, ...

    def run(m):
        # the arithmetic the file defines (fused int8 kernels differ by host: ort_session)
        return run_session(ort_session(m, exact=True), x)

    assert np.array_equal(run(raw), run(compact))
    assert len(compact.SerializeToString()) < len(raw.SerializeToString())


# ------------------------------------------------------------------------------ CLI


def vec_text(vector) -> str:
    return ",".join(str(int(v)) for v in vector)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, supernets):
    """A minimal run directory: config, adapted supernet, a front with one record."""
    root = tmp_path_factory.mktemp("run")
    encoding = "exits"
    arch = some_arch(encoding, exit_=4)
    save_supernets(root / "supernet.pt", {1.0: supernets[encoding]})
    config = {
        "encoding": encoding,
        "dataset": "digits",
        "data_dir": None,
        "device": "host-cpu-profile",
        "seed": 0,
        "settings": {"calibration_images": 300, "eval_batch": 100},  # as natv2 search records
    }
    (root / "config.json").write_text(json.dumps(config))
    record = {
        "id": arch.id,
        "encoding": encoding,
        "vector": [int(v) for v in SearchSpace(encoding).encode(arch)],
        "accuracy": 0.625,
    }
    (root / "front.json").write_text(json.dumps([record]))
    return root, arch


def test_cli_run_dir_mode_recalibrates_like_the_search(cli, run_dir, supernets, digits):
    root, arch = run_dir
    r = cli("export", root, "--subnet", arch.id, "--runs", "1")
    assert r.code == 0, r.err
    assert "exported" in r.out and "verdict" in r.out
    out = root / "exports" / arch.id
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"]["search_val_accuracy"] == 0.625
    assert report["source"]["mode"] == "run" and report["verdict"]["profile"] == "host-cpu-profile"
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert float(meta["val_accuracy"]) == 0.625 and meta["dataset"] == "digits"
    assert not (out / INT8_FILE).exists()  # host-cpu-profile is float32

    # the exported weights are the search's: materialised, BatchNorm recalibrated on the same
    # 300 training images in the same batches of 100 (config.json's settings)
    from natv2.accelerator import Accelerator
    from natv2.evaluate import EvalData, recalibrate_bn

    ref = materialize(supernets["exits"], arch)
    cpu = Accelerator(torch.device("cpu"))
    cache = EvalData(digits, digits.val, digits.calibration_subset(300), cpu, batch_size=100)
    recalibrate_bn(ref, cache.batches("calib", arch.resolution))
    got = load_subnet(out).state_dict()
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(got[key], value)
    assert "300 digits train images (batches of 100)" in report["source"]["batchnorm"]


def test_cli_postprocessed_folder(cli, run_dir, supernets, tmp_path):
    root, arch = run_dir
    folder = root / "postprocessed" / arch.id
    save_subnet(materialize(supernets["exits"], arch), folder)
    out = tmp_path / "pp"
    r = cli(
        "export",
        root,
        "--subnet",
        arch.id,
        "--postprocessed",
        "--runs",
        "0",
        "--out",
        out,
        "--json",
    )
    assert r.code == 0, r.err
    doc = json.loads(r.out)  # one JSON document, nothing else on stdout
    assert doc["source"]["mode"] == "postprocessed" and doc["id"] == arch.id
    assert (out / "model.onnx").is_file()


def copy_run(root: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("config.json", "front.json"):
        (dest / name).write_text((root / name).read_text())
    return dest


def test_cli_exports_a_postprocessed_aep_model_as_one_graph(cli, run_dir, supernets, tmp_path):
    from natv2.aep import aep_cost, build_aep, pruned
    from natv2.postprocess import save_postprocessed

    root, arch = run_dir
    run = copy_run(root, tmp_path / "aep-run")
    sub = materialize(supernets["exits"], arch)
    aep = pruned(build_aep(sub, supernets["exits"]), [2, 3])  # exits 2 and 3 of X = 4
    save_postprocessed(run / "postprocessed" / arch.id, aep, None)
    r = cli("export", run, "--subnet", arch.id, "--postprocessed", "--runs", "0", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["module"] == "AEPNet" and doc["id"] == arch.id
    out = run / "exports" / f"{arch.id}-postprocessed"
    graph = onnx.load(str(out / "model.onnx"))
    assert [o.name for o in graph.graph.output] == ["logits"]  # one graph, one output
    for case in doc["parity"]["float"]:
        assert case["passed"] is True
    assert len(doc["parity"]["float"]) == 4  # random and digits images, batch 1 and 7
    expected = aep_cost(aep, aep.config)
    assert doc["macs"]["onnx_graph"] == doc["macs"]["fvcore"] == expected["macs"]
    assert doc["macs"]["cost_model"] == expected["macs"]
    assert doc["params"]["module"] == expected["params"]
    assert doc["params"]["graph"] == params_after_bn_folding(aep)
    # the folder's model.pt + arch.json are the post-processed ones (rebuild without supernet)
    from natv2.commands.export import load_model_folder

    rebuilt = load_model_folder(out)
    x = torch.randn(3, 3, arch.resolution, arch.resolution)
    with torch.no_grad():
        ref = aep(x)
        torch.testing.assert_close(rebuilt(x), ref)
    got = ort_logits(out / "model.onnx", x)
    assert np.abs(got - ref.numpy()).max() <= PARITY_RTOL * max(1.0, np.abs(got).max())


def test_cli_corrupt_aep_folder_is_a_clear_error(cli, run_dir, tmp_path):
    root, arch = run_dir
    run = copy_run(root, tmp_path / "aep-run")
    aep = run / "postprocessed" / arch.id
    aep.mkdir(parents=True)
    (aep / "arch.json").write_text(json.dumps({"format": "natv2-aep/1", "arch": arch.to_dict()}))
    r = cli("export", run, "--subnet", arch.id, "--postprocessed")
    assert r.code == 2 and "arch.json" in r.err and len(r.err.strip().splitlines()) == 1


def supernet_checkpoint(supernets, encoding: str, tmp_path: Path):
    """A one-width checkpoint of ``encoding``'s supernet, a subnet of it and its ``--arch`` text."""
    ckpt = tmp_path / "sn.pt"
    save_supernets(ckpt, {1.0: supernets[encoding]})
    arch = some_arch(encoding)
    return ckpt, arch, vec_text(SearchSpace(encoding).encode(arch))


def test_cli_supernet_mode_json(cli, supernets, tmp_path):
    ckpt, arch, vector = supernet_checkpoint(supernets, "parallel", tmp_path)
    out = tmp_path / "out"
    r = cli("export", "--supernet", ckpt, "--arch", vector, "--out", out, "--runs", "0", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["id"] == arch.id and doc["encoding"] == "parallel"
    assert doc["source"]["batchnorm"] == "the supernet's statistics"
    assert doc["verdict"] is None and doc["int8"] is None and doc["accuracy"]["dataset"] is None
    assert doc["macs"]["onnx_graph"] == doc["macs"]["fvcore"] == doc["macs"]["cost_model"]
    assert sorted(doc["files"]) == ["arch.json", "model.onnx", "model.pt"]
    # the weights are the supernet's own (no recalibration)
    ref = materialize(supernets["parallel"], arch).state_dict()
    for key, value in load_subnet(out).state_dict().items():
        torch.testing.assert_close(value, ref[key])


def test_cli_int8_profile_writes_the_host_file(cli, supernets, tmp_path):
    ckpt, _arch, vector = supernet_checkpoint(supernets, "baseline", tmp_path)
    out = tmp_path / "out"
    args = ["--arch", vector, "--out", out, "--device", "microcontroller-profile"]
    r = cli(
        "export", "--supernet", ckpt, *args, "--dataset", "digits", "--runs", "2", "--no-tflite"
    )
    assert r.code == 0, r.err
    assert "int8 host" in r.out and "verdict" in r.out
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["files"]) == sorted(
        ["arch.json", "model.onnx", "model.pt", INT8_FILE, INT8_HOST_FILE]
    )
    assert set(report["latency"]["host"]) == {"float", "int8", "int8_host"}
    assert report["verdict"]["deployed_file"] == INT8_FILE
    assert report["accuracy"]["int8_host_top1"] is not None
    assert activation_zero_point_dtypes(onnx.load(str(out / INT8_HOST_FILE))) == {
        np.dtype(np.uint8)
    }


def test_cli_bad_inputs_exit_2_with_one_line(cli, run_dir, tmp_path):
    root, arch = run_dir
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    good = vec_text(SearchSpace("exits").encode(arch))
    out = tmp_path / "never"
    cases = {
        "unknown subnet": (["export", root, "--subnet", "r48-nope"], "not in"),
        "missing run dir": (["export", tmp_path / "missing", "--subnet", arch.id], "run directory"),
        "corrupt checkpoint": (
            ["export", "--supernet", corrupt, "--arch", good, "--out", out],
            "checkpoint",
        ),
        "short vector": (
            ["export", "--supernet", root / "supernet.pt", "--arch", "1,2,3", "--out", out],
            "genes",
        ),
        "vector out of range": (
            ["export", "--supernet", root / "supernet.pt", "--arch", "9" + good[1:], "--out", out],
            "allowed range",
        ),
        "wrong encoding": (
            [
                "export",
                "--supernet",
                root / "supernet.pt",
                "--arch",
                good,
                "-e",
                "parallel",
                "--out",
                out,
            ],
            "genes",
        ),
        "int8 without images": (
            ["export", "--supernet", root / "supernet.pt", "--arch", good, "--out", out, "--int8"],
            "calibration images",
        ),
        "both modes": (["export", root, "--supernet", corrupt], "either"),
        "supernet without out": (["export", "--supernet", corrupt, "--arch", good], "--out"),
    }
    for name, (args, words) in cases.items():
        r = cli(*args)
        assert r.code == 2, (name, r.code, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (name, r.err)
        assert words in lines[0], (name, lines[0])
    assert not out.exists()


def test_a_budget_with_no_figure_is_named_not_passed_silently(cli, run_dir, tmp_path):
    """host-cpu-profile judges a measured latency: an export that times nothing (--runs 0)
    has no figure for max_latency_ms, and its verdict says so instead of passing it."""
    root, arch = run_dir
    out = tmp_path / "untimed"
    r = cli("export", root, "--subnet", arch.id, "--runs", "0", "--out", out)
    assert r.code == 0, r.err
    verdict = json.loads((out / "report.json").read_text())["verdict"]
    assert verdict["unchecked"] == ["max_latency_ms"]
    assert "max_latency_ms" not in {c["budget_key"] for c in verdict["checks"]}
    assert "not checked (no figure): max_latency_ms" in r.out
