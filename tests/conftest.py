"""Shared fixtures: run the CLI in-process the way a user's shell would see it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest

# Before any test module imports torch: OpenMP's busy-waiting slows two-thread CPU runs up to
# 20x on small virtual machines (see natv2/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_configure(config):
    import torch

    torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def digits():
    from natv2.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def supernet_ckpt(tmp_path_factory, digits):
    """A tiny exits+parallel supernet pretrained with the (seconds-long) test schedule."""
    from natv2.accelerator import resolve_accelerator
    from natv2.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("supernet") / "tiny.pt"
    cfg = PretrainConfig("tiny-w1.0", "exits+parallel", "test", seed=0, calibration_images=64)
    pretrain(cfg, digits, resolve_accelerator("cpu"), out, show_progress=False, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def tight_profile(tmp_path_factory):
    """A microcontroller-like profile whose MAC and SRAM budgets cut the tiny space in two."""
    path = tmp_path_factory.mktemp("profiles") / "tight.toml"
    path.write_text(
        'name = "tight"\ndescription = "test profile"\n'
        '[hardware]\ndtype = "int8"\nmacs_per_second = 1.0e8\nsram_bytes = 40000\n'
        "flash_bytes = 400000\n"
        '[task]\nobjectives = ["accuracy", "macs"]\n'
        # the tests' supernet trains for seconds and sits near chance, where int8 rounding
        # moves several of digits' 359 test images: the int8 check runs, with this tolerance
        "max_top1_drop = 0.1\n"
        "[budgets]\nmax_macs = 1200000\nmax_peak_sram_bytes = 30000\n"
    )
    return path


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Call ``natv2 ARGS...`` through ``natv2.cli.main``; returns exit code, stdout, stderr."""
    from natv2.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
