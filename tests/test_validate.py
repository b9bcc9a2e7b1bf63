"""``natv2 validate`` on real ONNX exports: figures, budgets, exit codes, top-1."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from natv2.cli import main
from natv2.errors import Natv2Error
from natv2.export.validate import top1_accuracy, validate_onnx
from natv2.profiling.counters import onnx_costs

FAST = ["--warmup", "1", "--runs", "3", "--threads", "1"]

PERMISSIVE = """
name = "roomy-board"
description = "a test profile every small model fits"
[hardware]
sram_bytes = 1_000_000_000
flash_bytes = 1_000_000_000
dtype = "float32"
latency = "measure"
[task]
objectives = ["accuracy", "latency"]
target_latency_ms = 60000
[budgets]
max_params = 100_000_000
max_macs = 10_000_000_000
"""


def _export(module: nn.Module, example: torch.Tensor, path: Path, dynamic: dict) -> Path:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,  # the TorchScript exporter: ~0.5 s here, the dynamo one ~15 s
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=dynamic,
        )
    return path


@pytest.fixture(scope="module")
def mbv3(tmp_path_factory) -> Path:
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mbv3") / "mbv3.onnx"
    dynamic = {"input": {0: "batch"}, "logits": {0: "batch"}}
    return _export(mobilenet_v3_small(num_classes=10), torch.zeros(1, 3, 64, 64), path, dynamic)


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    code = info.value.code
    assert code is None or isinstance(code, int), code  # main exits with a status, not a message
    return (0 if code is None else code), out.out, out.err


def test_validate_fails_microcontroller_with_exit_1(mbv3, capsys):
    code, out, err = _run(
        ["validate", str(mbv3), "--device", "microcontroller-profile", *FAST], capsys
    )
    assert code == 1, err
    costs = onnx_costs(mbv3, dtype="int8")
    for text in (
        f"params     {costs.params:,}",
        f"MACs       {costs.macs:,}",
        f"flash      {costs.flash_bytes:,} bytes",
        f"{costs.peak_sram_bytes:,} bytes of activations",
        "ms estimate (MACs / 1e+08 MAC/s)",
        "this host: median",
        "p90",
        "1 intra-op",
        "latency_ms (estimate)",
        "FAIL",
    ):
        assert text in out, text
    flash_line = next(line for line in out.splitlines() if line.startswith("flash_bytes"))
    assert flash_line.endswith("FAIL") and "851,558" in flash_line
    sram_line = next(line for line in out.splitlines() if line.startswith("peak_sram_bytes"))
    assert sram_line.endswith("pass")


def test_validate_json_is_one_document_with_every_figure(mbv3, capsys):
    args = ["validate", str(mbv3), "--device", "microcontroller-profile", "--json", *FAST]
    code, out, _ = _run(args, capsys)
    assert code == 1
    doc = json.loads(out)
    costs = onnx_costs(mbv3, dtype="int8")
    assert doc["dtype"] == "int8" and doc["stored_dtype"] == "float32"
    assert doc["input_shape"] == [1, 3, 64, 64] and doc["output_shape"] == [1, 10]
    assert doc["params"] == costs.params
    assert doc["macs"] == costs.macs
    assert doc["flash_bytes"] == costs.flash_bytes
    assert doc["peak_sram_bytes"] == costs.peak_sram_bytes
    lat = doc["latency"]
    assert lat["budget_basis"] == "estimate"
    assert lat["estimate_ms"] == pytest.approx(costs.macs / 1e8 * 1000)
    assert lat["latency_ms"] == lat["estimate_ms"]
    assert lat["host"]["runs"] == 3 and lat["host"]["intra_op_threads"] == 1
    assert lat["host"]["median_ms"] <= lat["host"]["p90_ms"]
    checks = {c["name"]: c for c in doc["checks"]}
    assert set(checks) == {"macs", "flash_bytes", "peak_sram_bytes", "latency_ms"}
    assert not checks["flash_bytes"]["passed"] and checks["flash_bytes"]["budget"] == 851558
    assert checks["macs"]["passed"]
    assert doc["passed"] is False and doc["accuracy"] is None


def test_validate_onnx_names_the_sram_budget_a_tflm_profile_cannot_judge(mbv3, capsys):
    """mcu-nano-profile judges SRAM on the TFLM arena: an ONNX file has none, so the budget
    is named as not checked (never silently dropped, never judged on another figure)."""
    args = ["validate", str(mbv3), "--device", "mcu-nano-profile", "--json", *FAST]
    _, out, _ = _run(args, capsys)
    doc = json.loads(out)
    assert "max_peak_sram_bytes" not in {c["budget_key"] for c in doc["checks"]}
    assert "validate the .tflite file" in doc["unchecked"]["max_peak_sram_bytes"]
    _, out, _ = _run(["validate", str(mbv3), "--device", "mcu-nano-profile", *FAST], capsys)
    assert "max_peak_sram_bytes" in out and "not checked" in out
    args = ["validate", str(mbv3), "--device", "microcontroller-profile", "--json", *FAST]
    _, out, _ = _run(args, capsys)
    assert json.loads(out)["unchecked"] == {}


def test_validate_passes_a_permissive_profile_with_exit_0(mbv3, tmp_path, capsys):
    profile = tmp_path / "roomy.toml"
    profile.write_text(PERMISSIVE)
    code, out, err = _run(["validate", str(mbv3), "--device", str(profile), *FAST], capsys)
    assert code == 0, err
    assert "latency_ms (this host)" in out
    assert "verdict    pass" in out
    assert "FAIL" not in out


def test_validate_report_api_and_accuracy_on_a_hand_made_dataset(mbv3, tmp_path):
    import onnxruntime as ort

    class Images:
        """The DatasetSplits interface: .test, .num_classes, .prepare_batch."""

        name = "hand-made"
        num_classes = 10

        def __init__(self, labels: np.ndarray, images: torch.Tensor) -> None:
            self.test = [(images[i], int(labels[i])) for i in range(len(labels))]

        def prepare_batch(self, x: torch.Tensor, resolution: int, train: bool) -> torch.Tensor:
            assert not train and x.dtype == torch.uint8
            x = nn.functional.interpolate(x.float() / 255, size=(resolution, resolution))
            return (x - 0.5) / 0.25

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=gen)
    probe = Images(np.zeros(12, dtype=int), images)
    x = probe.prepare_batch(images, 64, train=False).numpy()
    predicted = ort.InferenceSession(str(mbv3)).run(None, {"input": x})[0].argmax(1)

    right = Images(predicted, images)
    assert top1_accuracy(mbv3, right, 64, batch_size=5) == (1.0, 12)
    wrong = Images((predicted + 1) % 10, images)
    assert top1_accuracy(mbv3, wrong, 64, batch_size=5, limit=7) == (0.0, 7)

    report = validate_onnx(
        mbv3, "mobile-profile", dataset=right, threads=1, warmup=0, runs=2, limit=10
    )
    assert report.accuracy is not None and report.accuracy.top1 == 1.0
    assert report.accuracy.images == 10 and report.accuracy.dataset == "hand-made"
    assert report.costs.dtype == "float32"
    doc = report.to_json()
    json.dumps(doc)
    assert doc["accuracy"] == {"top1": 1.0, "images": 10, "dataset": "hand-made"}
    assert "top-1      100.00 % on hand-made test (10 images)" in report.to_text()
    assert {c.name for c in report.checks} == {"params", "macs", "latency_ms"}
    assert report.exit_code == (0 if report.passed else 1)

    class Five(Images):
        num_classes = 5

    with pytest.raises(Natv2Error, match="outputs 10 classes but the dataset has 5"):
        top1_accuracy(mbv3, Five(predicted, images), 64)


def test_validate_with_a_natv2_dataset(mbv3, tmp_path, capsys):
    pytest.importorskip("natv2.data")
    profile = tmp_path / "roomy.toml"
    profile.write_text(PERMISSIVE)
    args = ["validate", str(mbv3), "--device", str(profile), "--json", *FAST]
    code, out, err = _run([*args, "--dataset", "mnist5k", "--limit", "40"], capsys)
    assert code == 0, err
    acc = json.loads(out)["accuracy"]
    assert acc["dataset"] == "mnist5k" and acc["images"] == 40
    assert 0.0 <= acc["top1"] <= 1.0
    # by default a fixed sample of 2,000 test images (mnist5k's test split is 1,000: all of it)
    code, out, err = _run([*args, "--dataset", "mnist5k"], capsys)
    assert code == 0, err
    assert json.loads(out)["accuracy"]["images"] == 1000
    code, out, err = _run([*args, "--dataset", "mnist5k", "--limit", "40", "--full-test"], capsys)
    assert code == 2 and "--limit and --full-test exclude each other" in err


def test_dynamic_input_needs_resolution(tmp_path, capsys):
    from torchvision.models import mobilenet_v3_small

    dyn = {"input": {0: "b", 2: "h", 3: "w"}, "logits": {0: "b"}}
    path = _export(
        mobilenet_v3_small(num_classes=10), torch.zeros(1, 3, 48, 48), tmp_path / "dyn.onnx", dyn
    )
    code, _, err = _run(["validate", str(path), "--device", "gpu-profile", *FAST], capsys)
    assert code == 2 and "dynamic height" in err and "--resolution" in err
    args = ["validate", str(path), "--device", "gpu-profile", "--resolution", "48", "--json"]
    code, out, err = _run([*args, *FAST], capsys)
    assert code == 0, err  # gpu-profile sets no budgets
    doc = json.loads(out)
    assert doc["input_shape"] == [1, 3, 48, 48] and doc["checks"] == []


class Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_bad_inputs_exit_2_without_traceback(mbv3, tmp_path, capsys):
    text = tmp_path / "notes.onnx"
    text.write_text("this is a text file, not a model\n")
    flat = _export(Flat(), torch.zeros(1, 16), tmp_path / "flat.onnx", {"input": {0: "b"}})
    bad_profile = tmp_path / "bad.toml"
    bad_profile.write_text(PERMISSIVE.replace('dtype = "float32"', 'dtype = "int3"'))
    cases = [
        ([str(text), "--device", "microcontroller-profile"], [str(text), "not a readable ONNX"]),
        ([str(mbv3), "--device", "toaster-profile"], ["unknown device profile 'toaster-profile'"]),
        ([str(flat), "--device", "microcontroller-profile"], ["shape bx16", "N x C x H x W"]),
        ([str(mbv3), "--device", str(bad_profile)], [str(bad_profile), "'hardware.dtype'"]),
        ([str(tmp_path / "none.onnx"), "--device", "gpu-profile"], ["no such file"]),
        ([str(mbv3), "--device", "gpu-profile", "--resolution", "32"], ["fixed height of 64"]),
    ]
    for args, fragments in cases:
        code, out, err = _run(["validate", *args, *FAST], capsys)
        assert code == 2, (args, err)
        assert out == ""
        assert err.startswith("error: ") and "Traceback" not in err
        for fragment in fragments:
            assert fragment in err, (fragment, err)
