"""Counters on real artefacts: hand-computed MACs, params, flash and peak memory."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from natv2.errors import Natv2Error
from natv2.profiling.counters import (
    IN_PLACE_OPS,
    MemOp,
    flash_bytes_of_module,
    fvcore_macs,
    module_params,
    onnx_costs,
    params_after_bn_folding,
    peak_live_bytes,
)
from natv2.profiling.latency import measure_latency, physical_cores


def export(module: nn.Module, shape, path: Path, dynamic: dict | None = None) -> Path:
    """Legacy (TorchScript) exporter: fast, opset 17, keeps every bias the module has."""
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(shape),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=dynamic or {"input": {0: "batch"}, "output": {0: "batch"}},
        )
    return path


class Residual(nn.Module):
    """x -> conv(4->8) -> relu -> conv(8->4) -> + x."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x))) + x


class Small(nn.Module):
    """Stem conv + BN, depthwise conv + BN, squeeze-excite, pointwise conv + BN, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.dw = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.se_fc1 = nn.Conv2d(8, 4, 1)
        self.se_fc2 = nn.Conv2d(4, 8, 1)
        self.pw = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(self.stem(x))
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        s = nn.functional.hardsigmoid(self.se_fc2(torch.relu(self.se_fc1(s))))
        x = self.pw(x * s)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# Small on a 1x3x16x16 input (stride 2 -> 8x8 maps):
#   stem  out 8x8x8 = 512 elements x (3/1 * 3*3 = 27) = 13824
#   dw    out 512 x (8/8 * 3*3 = 9)                    =  4608
#   se    fc1 4 x 8 = 32, fc2 8 x 4 = 32               =    64
#   pw    out 16x8x8 = 1024 x 8                         =  8192
#   fc    16 x 10                                       =   160
SMALL_MACS = 13824 + 4608 + 64 + 8192 + 160  # 26848
# params: stem 216 + bn 16, dw 72 + bn 16, fc1 32+4, fc2 32+8, pw 128 + bn 32, fc 160+10
SMALL_PARAMS = 216 + 16 + 72 + 16 + 36 + 40 + 128 + 32 + 170  # 726
# BN folding drops 2C and adds a C-bias to each bias-free conv: -(8 + 8 + 16)
SMALL_FOLDED = SMALL_PARAMS - (8 + 8 + 16)  # 694
# int8 flash: weights 216+72+32+32+128+160 = 640 (1 B), biases 8+8+4+8+16+10 = 54 (4 B),
# output channels 8+8+4+8+16+10 = 54 (4 B scale)
SMALL_FLASH_INT8 = 640 + 4 * 54 + 4 * 54  # 1072


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export(Small(), (1, 3, 16, 16), tmp_path_factory.mktemp("small") / "small.onnx")


def test_module_counts_by_hand():
    m = Small()
    assert module_params(m) == SMALL_PARAMS
    assert params_after_bn_folding(m) == SMALL_FOLDED
    assert flash_bytes_of_module(m, "float32") == 4 * SMALL_FOLDED
    assert flash_bytes_of_module(m, "float16") == 2 * SMALL_FOLDED
    assert flash_bytes_of_module(m, "int8") == SMALL_FLASH_INT8


def test_fvcore_macs_follow_the_definition():
    m = Small().train()
    assert fvcore_macs(m, (1, 3, 16, 16)) == SMALL_MACS
    assert m.training  # mode restored after tracing
    assert fvcore_macs(m, (3, 16, 16)) == SMALL_MACS  # batch 1 implied


def test_onnx_graph_counts_by_hand(small_onnx):
    costs = onnx_costs(small_onnx)
    assert costs.macs == SMALL_MACS
    assert costs.params == SMALL_FOLDED  # eval export folds each BN into its conv
    assert costs.flash_bytes == 4 * SMALL_FOLDED
    assert onnx_costs(small_onnx, dtype="int8").flash_bytes == SMALL_FLASH_INT8
    assert costs.input_shape == (1, 3, 16, 16) and costs.output_shape == (1, 10)
    ops = {n.op_type for n in costs.nodes}
    assert "BatchNormalization" not in ops and {"Conv", "Gemm", "Mul"} <= ops
    assert sum(n.macs for n in costs.nodes if n.op_type == "Gemm") == 160


def test_qdq_int8_graph_counts_int8_weights_not_scales(small_onnx, tmp_path):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter(
                [{"input": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(2)]
            )

        def get_next(self):
            return next(self.items, None)

    out = tmp_path / "small.int8.onnx"
    quantize_static(
        str(small_onnx), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True
    )
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "DequantizeLinear" in ops
    costs = onnx_costs(out, dtype="int8")
    assert costs.params == SMALL_FOLDED
    assert costs.macs == SMALL_MACS
    assert costs.flash_bytes == SMALL_FLASH_INT8
    assert costs.stored_dtype == "int8"


def test_peak_memory_of_a_residual_network_by_hand(tmp_path):
    path = export(Residual(), (1, 4, 8, 8), tmp_path / "res.onnx")
    costs = onnx_costs(path)
    assert [n.op_type for n in costs.nodes] == ["Conv", "Relu", "Conv", "Add"]
    # elements at batch 1: x = 4*8*8 = 256, a = conv1 out 8*8*8 = 512, b = conv2 out 256,
    # y = add out 256. x stays alive until the Add (the residual).
    #   Conv1: x + a         = 768
    #   Relu:  in place on a = 768
    #   Conv2: x + a + b     = 1024   <- peak
    #   Add:   x + b + y     = 768
    assert [n.live_bytes for n in costs.nodes] == [768 * 4, 768 * 4, 1024 * 4, 768 * 4]
    assert costs.peak_sram_bytes == 1024 * 4
    assert onnx_costs(path, dtype="int8").peak_sram_bytes == 1024
    assert costs.nodes[1].in_place and not costs.nodes[2].in_place
    # conv1 4*8*9 + 8, conv2 8*4*9 + 4; MACs 512*36 + 256*72
    assert costs.params == 296 + 292
    assert costs.macs == 512 * 36 + 256 * 72


def test_peak_live_bytes_rule_on_a_schedule():
    # x -> A(alloc) -> r (in place on a) ; x and r -> B(alloc) -> out
    ops = [
        MemOp("A", ("x",), ("a",)),
        MemOp("R", ("a",), ("r",), in_place=True),
        MemOp("B", ("x", "r"), ("out",)),
    ]
    sizes = {"x": 10, "a": 20, "out": 5}
    peak = peak_live_bytes(ops, sizes, ["x"], ["out"])
    # A: x + a = 30; R: same buffer = 30; B: x + a(r) + out = 35
    assert peak.live_bytes == (30, 30, 35)
    assert peak.peak_bytes == 35 and peak.peak_index == 2
    assert {"Relu", "HardSwish", "Reshape", "DequantizeLinear"} <= IN_PLACE_OPS
    assert "Conv" not in IN_PLACE_OPS and "Add" not in IN_PLACE_OPS


def test_dynamic_resolution_needs_an_input_shape(tmp_path):
    dyn = {"input": {0: "b", 2: "h", 3: "w"}, "output": {0: "b"}}
    path = export(Small(), (1, 3, 16, 16), tmp_path / "dyn.onnx", dyn)
    with pytest.raises(Natv2Error, match="dynamic height"):
        onnx_costs(path)
    assert onnx_costs(path, input_shape=(1, 3, 16, 16)).macs == SMALL_MACS
    # at 32x32 the conv maps have 4x the positions; SE and fc do not grow
    big = onnx_costs(path, input_shape=(1, 3, 32, 32)).macs
    assert big == 4 * (13824 + 4608 + 8192) + 64 + 160
    with pytest.raises(Natv2Error, match="fixed channel count of 3"):
        onnx_costs(path, input_shape=(1, 1, 16, 16))


def test_mobilenet_v3_small_counters_agree(tmp_path):
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    m = mobilenet_v3_small(num_classes=10).eval()
    path = export(m, (1, 3, 64, 64), tmp_path / "mbv3.onnx")
    costs = onnx_costs(path)
    bn_channels = sum(b.num_features for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    # every BN follows a bias-free conv: export drops 2C and adds a C-bias for each
    assert costs.params == module_params(m) - bn_channels == params_after_bn_folding(m)
    assert costs.macs == fvcore_macs(m, (1, 3, 64, 64))
    assert costs.flash_bytes == flash_bytes_of_module(m, "float32")
    assert onnx_costs(path, dtype="int8").flash_bytes == flash_bytes_of_module(m, "int8")
    # the peak is the stem conv: input 3*64*64 + output 16*32*32 elements
    assert costs.peak_sram_bytes == 4 * (3 * 64 * 64 + 16 * 32 * 32)


def test_latency_stats_are_sane(small_onnx):
    stats = measure_latency(small_onnx, (1, 3, 16, 16), intra_op_threads=1, warmup=2, runs=5)
    assert stats.runs == 5 and stats.warmup == 2
    assert stats.intra_op_threads == 1 and stats.inter_op_threads == 1
    assert stats.provider == "CPUExecutionProvider" and stats.batch == 1
    assert 0 < stats.median_ms <= stats.p90_ms
    assert stats.mean_ms > 0
    default = measure_latency(small_onnx, warmup=0, runs=1)
    assert default.intra_op_threads == physical_cores() >= 1
    assert default.median_ms == default.p90_ms == default.mean_ms


def test_unreadable_model_is_a_natv2_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model\n")
    with pytest.raises(Natv2Error, match="not a readable ONNX model"):
        onnx_costs(bad)
    with pytest.raises(Natv2Error, match="no such file"):
        onnx_costs(tmp_path / "missing.onnx")
