"""``natv2 predictors compare``: the paper's predictor study (Fig. 6) on a run's archive.

The predictor libraries (scikit-learn, LightGBM, CatBoost) and the run-directory helpers are
imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from natv2.commands.common import JsonFlag, emit_json
from natv2.errors import Natv2Error
from natv2.untrusted import MAX_RUNS, MAX_SEED

app = typer.Typer(help="Accuracy predictors: compare them on a search archive.")

_NAMES = "lgbm, gp, rbf, rbf_ensemble, mlp, cart, svr, ridge, knn, bayesian_ridge, e2epp, catboost"


def load_archive(run_dir: str | Path, source: str = "archive"):
    """(space, vectors (n, L), accuracies (n,), skipped) from RUN_DIR/archive.jsonl, or with
    ``source="evaluations"`` from the pre-processing evaluations (one supernet state, the
    paper's setting for comparing predictors) in RUN_DIR/evaluations.jsonl.

    The encoding comes from config.json ("encoding"), else from the records; records without a
    measured accuracy (null) are skipped and counted.
    """
    from natv2.rundir import ARCHIVE, load_config, read_records, require_run_dir, run_space

    run_dir = require_run_dir(run_dir)
    records = read_records(run_dir, source)
    if source == "evaluations":
        first = [r for r in records if r.get("stage") in ("pre-processing", "initial archive")]
        records = first or records
    config = load_config(run_dir)
    encoding = config.get("encoding")
    if encoding is None:
        found = sorted({str(r.get("encoding")) for r in records if r.get("encoding")})
        if len(found) != 1:
            raise Natv2Error(
                f"{run_dir}: config.json names no encoding and the archive records name "
                f"{', '.join(found) or 'none'}"
            )
        encoding = found[0]
    space = run_space(config, encoding)
    vectors, accuracies, skipped = [], [], 0
    for i, rec in enumerate(records):
        label = f"{run_dir / ARCHIVE} record {i + 1} ({rec.get('id', 'no id')})"
        if rec.get("encoding", encoding) != encoding:
            raise Natv2Error(f"{label}: encoding {rec['encoding']!r}, the run uses {encoding!r}")
        acc = rec.get("accuracy")
        if acc is None:
            skipped += 1
            continue
        if "vector" not in rec:
            raise Natv2Error(f"{label}: no encoding vector")
        try:
            vectors.append(space.check(rec["vector"]))
            accuracies.append(float(acc))
        except (TypeError, ValueError) as exc:
            raise Natv2Error(f"{label}: {exc}") from None
    X = np.asarray(vectors, dtype=np.int64).reshape(-1, space.length)
    return space, X, np.asarray(accuracies, dtype=np.float64), skipped


@app.command()
def compare(
    run_dir: Path = typer.Argument(..., help="A search run directory (with archive.jsonl)."),
    folds: int = typer.Option(
        10, "--folds", min=2, max=MAX_RUNS, help="k of the k-fold cross-validation."
    ),
    features: str = typer.Option(
        "integer", "--features", help="integer (default), onehot, or decoded (the search's)."
    ),
    predictors: str | None = typer.Option(
        None, "--predictors", help=f"Comma-separated subset of: {_NAMES} (default: all installed)."
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, max=MAX_SEED, help="Seed of the folds and the predictors."
    ),
    as_json: JsonFlag = False,
) -> None:
    """Spearman rho, Kendall tau, RMSE and fit time of every predictor on the archive (k-fold)."""
    from natv2.predictors import FEATURES, cross_validate, parse_predictor_names

    if features not in FEATURES:
        raise Natv2Error(f"unknown features {features!r}; choose one of: {', '.join(FEATURES)}")
    names = parse_predictor_names(predictors)
    space, X, y, skipped = load_archive(run_dir)
    if len(X) < folds:
        raise Natv2Error(
            f"{run_dir}: {len(X)} archive records with an accuracy; {folds}-fold "
            f"cross-validation needs at least {folds} (lower --folds or run the search longer)"
        )
    scores: list[tuple[str, dict[str, float | None]]] = []
    for name in names:
        typer.echo(f"cross-validating {name} ...", err=True)
        res = cross_validate(name, X, y, folds=folds, seed=seed, features=features, space=space)
        scores.append((name, res.to_dict()))
    scores.sort(key=lambda score: _best_rho_first(score[1]))
    rows = [{"predictor": name, **metrics} for name, metrics in scores]
    if as_json:
        emit_json(
            {
                "run_dir": str(run_dir),
                "encoding": space.encoding,
                "features": features,
                "folds": folds,
                "seed": seed,
                "n_records": len(X),
                "skipped_unevaluated": skipped,
                "results": rows,
            }
        )
        return
    note = f", {skipped} without accuracy skipped" if skipped else ""
    typer.echo(
        f"{len(X)} archive records of {run_dir} ({space.encoding}{note}), {features} features, "
        f"{folds}-fold cross-validation, sorted by Spearman rho"
    )
    typer.echo(f"{'predictor':<16}{'rho':>8}{'tau':>8}{'rmse':>9}{'fit s':>9}")
    for name, m in scores:
        typer.echo(
            f"{name:<16}{_fmt(m['spearman_rho'], 3):>8}{_fmt(m['kendall_tau'], 3):>8}"
            f"{_fmt(m['rmse'], 4):>9}{_fmt(m['fit_seconds'], 3):>9}"
        )
    typer.echo("fit s: mean seconds of one fold's fit (for lgbm: its whole ten-model ensemble)")


def _best_rho_first(metrics: dict[str, float | None]) -> float:
    """Sort key: highest Spearman rho first, predictors without one (constant data) last."""
    rho = metrics["spearman_rho"]
    return -rho if rho is not None else np.inf


def _fmt(value: float | None, digits: int) -> str:
    return "nan" if value is None else f"{value:.{digits}f}"
