"""benchmarks/references.py: MLPerf Tiny's ResNet-8 has the published size (about 78 k params,
12.5 M MACs at 32x32x3 and 10 classes) by natv2's own counters."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "references.py"


def _references():
    spec = importlib.util.spec_from_file_location("natv2_bench_references", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def test_resnet8_matches_mlperf_tiny_counts():
    refs = _references()
    torch.manual_seed(0)
    model = refs.resnet8(10)
    counts = refs.count(model, 32)
    # Keras' summary of the MLPerf model: 78,666 params, of which 480 are BatchNorm running
    # statistics (buffers in PyTorch, not params)
    assert counts.params == 78_666 - 480
    assert counts.macs == 12_501_632
    assert abs(counts.params - refs.RESNET8_PARAMS) < 0.01 * refs.RESNET8_PARAMS
    assert abs(counts.macs - refs.RESNET8_MACS) < 0.01 * refs.RESNET8_MACS
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert refs.build_reference("mobilenet_v3_small", 10).resolution == 64
