"""The paper's predictor study (Fig. 6/7 and Fig. 8) on our own data.

    python benchmarks/predictors.py --run-dir runs/cifar10      # a search's archive
    python benchmarks/predictors.py                             # synthetic target, always runs

Prints two plain tables:

1. every predictor on ``--n`` samples (default 300), k-fold cross-validation (default 10):
   Spearman rho, Kendall tau, RMSE and the mean fit time of one fold (for lgbm, its whole
   ten-model ensemble: what the search pays per iteration) -- Fig. 6 and 7;
2. LightGBM's rho against the number of samples (50, 100, 200, 300, ...), integer against
   one-hot and decoded features, mean and standard deviation over ``--repeats`` random
   subsets -- Fig. 8.

Without ``--run-dir`` the accuracies are SYNTHETIC: ``natv2.predictors.synthetic_accuracy``, a
smooth made-up function of exit, depth, expand, kernel, branches, resolution and width plus
Gaussian noise, over subnets drawn with NATv2's sampler. No network is trained; those numbers
show that the code runs and how the predictors behave on a structured target, not how they do on
real accuracies.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from natv2.errors import Natv2Error
from natv2.predictors import (
    available_predictors,
    cross_validate,
    parse_predictor_names,
    synthetic_accuracy,
)
from natv2.space import SearchSpace


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_data(args) -> tuple[SearchSpace, np.ndarray, np.ndarray, str]:
    if args.run_dir:
        from natv2.commands.predictors import load_archive

        space, X, y, skipped = load_archive(args.run_dir, args.source)
        note = f", {skipped} unevaluated skipped" if skipped else ""
        return space, X, y, f"archive of {args.run_dir} ({len(X)} subnets{note}, {space.encoding})"
    space = SearchSpace(args.encoding)
    n = 2 * max([args.n, *args.sizes])  # a pool twice the largest size: repeats differ
    X = space.sample(n, np.random.default_rng(args.seed), "natv2")
    y = synthetic_accuracy(space, X, noise=args.noise, seed=args.seed)
    label = (
        f"SYNTHETIC target ({n} subnets from NATv2's sampler, {space.encoding}; accuracy = "
        f"natv2.predictors.synthetic_accuracy, a smooth function of exit/depth/expand/kernel/"
        f"branches/resolution/width + N(0, {args.noise}) noise; no network trained)"
    )
    return space, X, y, label


def subset(n_total: int, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n_total, size=size, replace=False))


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


def fig6(args, space, X, y) -> None:
    names = parse_predictor_names(args.predictors)
    n = min(args.n, len(X))
    idx = subset(len(X), n, args.seed)
    results = []
    for name in names:
        log(f"[1] {name} on {n} samples ...")
        res = cross_validate(
            name,
            X[idx],
            y[idx],
            folds=args.folds,
            seed=args.seed,
            features=args.features,
            space=space,
        )
        results.append((name, res))
    results.sort(key=lambda t: -t[1].spearman_rho if np.isfinite(t[1].spearman_rho) else np.inf)
    print(
        f"\n(1) Predictors on {n} samples, {args.features} features, {args.folds}-fold "
        f"cross-validation (paper Fig. 6, 7)"
    )
    rows = [
        [
            name,
            f"{r.spearman_rho:.3f}",
            f"{r.kendall_tau:.3f}",
            f"{r.rmse:.4f}",
            f"{r.fit_seconds:.3f}",
        ]
        for name, r in results
    ]
    print(table(["predictor", "rho", "tau", "rmse", "fit s"], rows))
    print("fit s: mean seconds of one fold's fit (lgbm: its whole ten-model ensemble)")


def fig8(args, space, X, y) -> None:
    sizes = [s for s in args.sizes if s <= len(X) and s >= args.folds]
    if args.run_dir and len(X) not in sizes and len(X) >= args.folds:
        sizes.append(len(X))
    rows = []
    for size in sorted(sizes):
        row = [str(size)]
        for features in ("integer", "onehot", "decoded"):
            rhos, secs = [], []
            repeats = 1 if size == len(X) else args.repeats
            for rep in range(repeats):
                log(f"[2] lgbm, {features}, {size} samples, repeat {rep + 1}/{repeats} ...")
                idx = subset(len(X), size, args.seed + 1000 * (rep + 1))
                res = cross_validate(
                    "lgbm",
                    X[idx],
                    y[idx],
                    folds=args.folds,
                    seed=args.seed + rep,
                    features=features,
                    space=space,
                )
                rhos.append(res.spearman_rho)
                secs.append(res.fit_seconds)
            spread = f" ± {np.std(rhos):.3f}" if repeats > 1 else " (all)"
            row += [f"{np.mean(rhos):.3f}{spread}", f"{np.mean(secs):.3f}"]
        rows.append(row)
    print(
        "\n(2) LightGBM rho against archive size, integer vs one-hot vs decoded, "
        f"{args.folds}-fold, "
        f"mean ± std over {args.repeats} random subsets (paper Fig. 8)"
    )
    head = ["samples", "integer rho", "fit s", "one-hot rho", "fit s", "decoded rho", "fit s"]
    print(table(head, rows))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", help="A natv2 search run directory (archive.jsonl).")
    p.add_argument(
        "--source",
        default="evaluations",
        choices=["evaluations", "archive"],
        help="evaluations: every pre-processing evaluation (default); archive: the final archive",
    )
    p.add_argument("--n", type=int, default=300, help="Samples for table 1 (default 300).")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--features", default="integer", help="Features for table 1.")
    p.add_argument(
        "--predictors",
        default=None,
        help=f"Comma-separated (default all installed: {','.join(available_predictors())}).",
    )
    p.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[50, 100, 200, 300, 500],
        help="Archive sizes for table 2 (default 50,100,200,300,500; capped by the data).",
    )
    p.add_argument("--repeats", type=int, default=3, help="Random subsets per size (table 2).")
    p.add_argument("--encoding", default="exits+parallel", help="Synthetic data's encoding.")
    p.add_argument("--noise", type=float, default=0.01, help="Synthetic target's noise std.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", choices=["1", "2"], help="Skip table 1 or table 2.")
    args = p.parse_args(argv)

    try:
        space, X, y, label = load_data(args)
        parse_predictor_names(args.predictors)
    except Natv2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"Data: {label}")
    print(
        f"Machine: {os.cpu_count()} CPUs visible; accuracies mean {y.mean():.4f}, "
        f"std {y.std():.4f}, range {y.min():.4f}..{y.max():.4f}"
    )
    if args.skip != "1":
        fig6(args, space, X, y)
    if args.skip != "2":
        fig8(args, space, X, y)
    if not args.run_dir:
        print("\n(SYNTHETIC data: rerun with --run-dir RUN on a real search archive.)")


if __name__ == "__main__":
    main()
