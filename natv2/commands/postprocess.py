"""``natv2 postprocess``: two-phase fine-tuning (plain or AEP) of a subnet of a search run."""

from __future__ import annotations

from pathlib import Path

import typer

from natv2.commands.common import JsonFlag, emit_json, make_logger
from natv2.untrusted import MAX_COUNT, MAX_SEED


def postprocess(
    run_dir: Path = typer.Argument(..., help="A `natv2 search` run directory."),
    subnet: str = typer.Option(..., "--subnet", help="Subnet id from the run's front."),
    method: str | None = typer.Option(
        None,
        "--method",
        help="finetune or aep (default: aep for subnets of exit supernets with exit > 1).",
    ),
    weighting: str | None = typer.Option(
        None, "--weighting", help="AEP exit weighting: unif (default), asc, desc or mix."
    ),
    optimizer: str | None = typer.Option(
        None, "--optimizer", help="sgd, adamw or ranger (default: sgd for finetune, adamw for aep)."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Initial learning rate (cosine annealed)."),
    max_epochs: int | None = typer.Option(
        None,
        "--max-epochs",
        min=0,
        help="Most epochs of phase 1 (and the cosine schedule's length).",
    ),
    patience: int | None = typer.Option(
        None,
        "--patience",
        min=1,
        max=MAX_COUNT,
        help="Epochs without a lower validation loss before stopping.",
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=2, max=MAX_COUNT),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", min=1, max=MAX_COUNT, help="Cap on the steps of an epoch."
    ),
    no_prune: bool = typer.Option(False, "--no-prune", help="AEP: keep every exit."),
    preset: str = typer.Option(
        "cpu",
        "--preset",
        help="cpu (at most 6 epochs of 15 steps, patience 2, lr 1e-2 for SGD and 1e-3 for "
        "AdamW/Ranger: about a minute) or paper (lr 1e-4, batch 64, at most 150 epochs, "
        "patience 30).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default RUN_DIR/postprocessed/ID)."
    ),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="Where the run's dataset lives (default: as the run recorded, or ./data).",
    ),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Random seed."),
    accelerator: str = typer.Option("auto", "--accelerator", help="auto, cpu, cuda or cuda:N."),
    as_json: JsonFlag = False,
) -> None:
    """Fine-tune a subnet of a search run in two phases (choose e epochs on validation, then
    train on train + validation for e epochs) and save it to RUN_DIR/postprocessed/ID."""
    from natv2.accelerator import resolve_accelerator
    from natv2.postprocess import postprocess_run

    acc = resolve_accelerator(accelerator)
    log = make_logger(as_json)

    def on_epoch(phase: int, rec: dict) -> None:
        parts = [f"phase {phase} epoch {rec['epoch']}:"]
        if "train_loss" in rec:
            parts.append(f"lr {rec['lr']:.2e}, train loss {rec['train_loss']:.4f}")
        if "val_loss" in rec:
            parts.append(f"val loss {rec['val_loss']:.4f}, val top-1 {rec['val_accuracy']:.2%}")
        log(" ".join([parts[0], ", ".join(parts[1:])]))

    res, folder = postprocess_run(
        run_dir,
        subnet,
        method=method,
        preset=preset,
        acc=acc,
        data_dir=data_dir,
        out=out,
        on_epoch=on_epoch,
        progress=True,
        log=log,
        weighting=weighting,
        optimizer=optimizer,
        lr=lr,
        max_epochs=max_epochs,
        patience=patience,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        prune=False if no_prune else None,
        seed=seed,
    )
    doc = res.result
    if as_json:
        emit_json(doc)
        return
    b, a = doc["before"], doc["after"]
    lines = [
        f"{'':<22} {'test top-1':>10} {'params':>10} {'MACs':>12}",
        f"{'before':<22} {100 * b['test_accuracy']:>9.2f}% {b['params']:>10,} {b['macs']:>12,}",
        f"{'after ' + doc['method']:<22} {100 * a['test_accuracy']:>9.2f}% {a['params']:>10,} "
        f"{a['macs']:>12,}",
    ]
    if doc["exits"]:
        lines.append(
            f"exits kept {doc['exits']['kept']} of {doc['exits']['candidates']}, ensemble "
            f"weights {[round(w, 4) for w in doc['exits']['ensemble_weights']]}"
        )
    lines.append(f"e = {doc['epochs_chosen']} epochs; saved to {folder}")
    typer.echo("\n".join(lines))
