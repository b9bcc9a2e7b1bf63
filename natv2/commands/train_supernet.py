"""``natv2 train-supernet``: pretrain an OFAv2 supernet (from scratch, or EPS)."""

from __future__ import annotations

from pathlib import Path

import typer

from natv2.commands.common import (
    JsonFlag,
    LayoutOption,
    dataset_help,
    emit_json,
    make_logger,
)
from natv2.data.registry import DEFAULT_DATASET
from natv2.space import ENCODINGS
from natv2.supernet.config import DEFAULT_LAYOUT
from natv2.untrusted import MAX_SEED, check_out_file, output_folder


def train_supernet(
    supernet: str = typer.Option(
        "tiny", help="Preset: tiny, ofa-mbv3 (both widths) or one width, e.g. ofa-mbv3-w1.0."
    ),
    encoding: str = typer.Option("exits+parallel", "--encoding", "-e", help=", ".join(ENCODINGS)),
    dataset: str = typer.Option(DEFAULT_DATASET, help=dataset_help()),
    data_dir: Path | None = typer.Option(None, help="Where datasets live (default ./data)."),
    download: bool = typer.Option(
        False, help="Download CIFAR, MNIST or Fashion-MNIST when missing."
    ),
    schedule: str = typer.Option(
        "scratch",
        help="scratch (all subnets at once from random weights: minutes on a CPU), scratch-full "
        "(the same at GPU scale), or OFAv2's EPS for a pretrained maximal network: cpu-demo, "
        "paper.",
    ),
    dense_skips: bool = typer.Option(False, help="Supernet with OFAv2 dense skip connections."),
    out: Path = typer.Option(Path("supernet.pt"), help="Supernet checkpoint to write."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from its checkpoint."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Random seed."),
    layout: LayoutOption = DEFAULT_LAYOUT,
    accelerator: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    as_json: JsonFlag = False,
) -> None:
    """Pretrain a supernet: sandwich training of all subnets at once, or EPS phases.

    Under `torchrun --nproc_per_node N` the same command trains with DistributedDataParallel.
    """
    from natv2.accelerator import resolve_accelerator, shutdown
    from natv2.data import load_dataset
    from natv2.pretrain import PretrainConfig, pretrain
    from natv2.supernet.config import check_layout

    check_out_file(out, "the supernet checkpoint")  # before hours of training, not after
    acc = resolve_accelerator(accelerator)
    log = make_logger(as_json, quiet=not acc.is_main)
    with output_folder(out.parent, "choose another --out"):
        data = load_dataset(dataset, data_dir=data_dir, download=download)
        cfg = PretrainConfig(
            supernet, encoding, schedule, dense_skips, seed, layout=check_layout(layout)
        )
        where = f"on {data.name} with schedule {schedule} on {acc.device}"
        log(f"training {supernet} ({encoding}) {where}")
        report = pretrain(cfg, data, acc, out, resume=resume, log=log)
    if acc.is_main:
        log(f"wrote {out}")
        if as_json:
            emit_json({"out": str(out), **report})
    shutdown(acc)
