"""Accuracy predictors for the NATv2 search (paper §3 "Performance Predictor", Fig. 6-8).

The search refits a predictor on the archive (about 300 subnets, their encoding vectors and
measured accuracies) at every iteration, then NSGA-III asks it for the accuracy of whole
populations many times. A predictor is therefore

* ``fit(X, y) -> self`` with ``X`` an ``(n, L)`` integer array of encoding vectors and ``y`` the
  accuracies (fractions in [0, 1]);
* ``predict(X) -> np.ndarray`` of shape ``(n,)``, one vectorised call per population.

``make_predictor(name, seed=0, features="integer")`` builds one from the registry
``PREDICTORS``; ``cross_validate`` measures one (Spearman rho, Kendall tau, RMSE, fit time) the
way the paper compares them. The default, ``lgbm``, is the paper's choice: a LightGBM regressor
with the Huber objective, trained by ten-fold cross-validation, the ten fold models averaged into
one ensemble.

Features
--------
``integer`` (the paper found it better than one-hot) feeds the encoding vector as it is;
``onehot`` one-hot encodes every gene over its bounds (``SearchSpace.lower``/``upper``), giving
``sum(upper - lower + 1)`` columns (1282 for ``exits+parallel``); ``decoded`` (the search's
default) spells every level gene out as what it means: active (before the exit), IRB, pointwise
and transformation branch present, expand and kernel of the IRB, plus the depth of every
reached stage and counts over the network (levels, IRB levels, branch-only levels, sum of
E x K^2). Branch-only levels (pointwise and/or transformation branch, no IRB) are counted
because they decide much of a subnet's accuracy in a weight-shared supernet: on the main job's
``scratch`` supernet, the maximal subnet with every level's mask set to 3, 5 or 7 keeps
96-97 % mnist5k top-1, with 2, 4 or 6 (no IRB) it falls to 11-52 %; the count lifts LightGBM's
rho on the main job's evaluations from 0.761 to 0.784. The three kinds of branch-only level are
also counted apart (pointwise alone, transformation alone, both: 11, 43 and 52 % above), with
the longest run of consecutive branch-only levels (a run has no IRB residual through it): on a
later main job's 202 evaluations that lifts rho from 0.829 to 0.854 (0.837 to 0.856 on five
200-sample subsets). A parallel
level's integer code packs the branch mask and the (E, K) pair into one number (1..63), which a
tree can only split into ranges of both at once; spelt out, the archive's accuracies rank much
better (``benchmarks/predictors.py``: Spearman rho 0.51 integer, 0.63 one-hot, 0.78 decoded,
on the main job's 202 pre-processing evaluations; the README has the table). Models that work
on distances or dot products (gp, rbf, rbf_ensemble, mlp, svr, ridge, knn, bayesian_ridge) see
the features min-max scaled to [0, 1] by the gene bounds; trees see them raw.

Targets
-------
Every predictor standardises the targets internally (zero mean, unit variance over the training
set) and maps predictions back, so hyper-parameters such as the Huber threshold or the SVR
epsilon are in units of the archive's accuracy spread, whatever the dataset.

Only numpy is imported here at module level; scikit-learn, LightGBM, scipy and CatBoost load
when a predictor is built, so ``natv2 --help`` stays fast.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from natv2.errors import Natv2Error
from natv2.space import (
    EK_PAIRS,
    EXPANDS,
    KERNELS,
    LEVELS_PER_STAGE,
    N_STAGES,
    SearchSpace,
)

FEATURES: tuple[str, ...] = ("integer", "onehot", "decoded")
DEFAULT_PREDICTOR = "lgbm"
# what the search feeds its predictor (the library default stays the paper's ``integer``)
SEARCH_FEATURES = "decoded"

# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def default_space(length: int) -> SearchSpace:
    """The widest space whose vectors have ``length`` genes (when the caller names none).

    23 genes: ``exits+parallel`` (its bounds contain those of ``exits``); 22 genes: ``parallel``
    (containing ``baseline``). One-hot columns of codes a narrower space never uses stay zero.
    """
    for encoding in ("exits+parallel", "parallel"):
        space = SearchSpace(encoding)
        if space.length == length:
            return space
    raise Natv2Error(
        f"encoding vectors have 22 or 23 genes (see `natv2 space sample`), got {length}"
    )


def _longest_run(flags: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Per row, the longest run of ``flags`` over consecutive active levels (inactive levels
    are not run, so they neither break nor extend a run)."""
    run = np.zeros(len(flags), dtype=np.int64)
    best = np.zeros(len(flags), dtype=np.int64)
    for j in range(flags.shape[1]):
        run = np.where(active[:, j], np.where(flags[:, j], run + 1, 0), run)
        best = np.maximum(best, run)
    return best


class FeatureEncoder:
    """Turn ``(n, L)`` integer encoding vectors of ``space`` into model features.

    ``kind="integer"``: the vector itself (as float64). ``kind="onehot"``: for every gene, one
    column per value in ``lower..upper``. ``lo``/``hi`` give every feature's bounds, which the
    distance-based predictors use to scale features to [0, 1].
    """

    def __init__(self, space: SearchSpace, kind: str = "integer") -> None:
        if kind not in FEATURES:
            raise Natv2Error(f"unknown features {kind!r}; choose one of: {', '.join(FEATURES)}")
        self.space = space
        self.kind = kind
        self._lower = space.lower
        self._upper = space.upper
        self._widths = self._upper - self._lower + 1
        self._offsets = np.concatenate([[0], np.cumsum(self._widths)[:-1]])
        if kind == "integer":
            self.lo = self._lower.astype(np.float64)
            self.hi = self._upper.astype(np.float64)
        elif kind == "onehot":
            self.lo = np.zeros(int(self._widths.sum()))
            self.hi = np.ones(int(self._widths.sum()))
        else:
            lo, hi = self._decoded_bounds()
            self.lo, self.hi = lo, hi

    _LEVEL_FIELDS: tuple[str, ...] = ("active", "irb", "pw", "tr", "expand", "kernel")

    def _decoded_names(self) -> list[str]:
        head = self.space.gene_names()[: self.space.level_offset]
        levels = [
            f"L{i + 1}.{f}" for i in range(N_STAGES * LEVELS_PER_STAGE) for f in self._LEVEL_FIELDS
        ]
        stages = [f"depth{s + 1}" for s in range(N_STAGES)]
        totals = ["levels", "irb_levels", "branch_only_levels", "sum_ek2"]
        kinds = ["pw_only_levels", "tr_only_levels", "pw_tr_levels", "branch_only_run"]
        return [*head, *levels, *stages, *totals, *kinds]

    def _decoded_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        n_head = self.space.level_offset
        per_level_hi = [1, 1, 1, 1, max(EXPANDS), max(KERNELS)]
        n_levels = N_STAGES * LEVELS_PER_STAGE
        hi = np.concatenate(
            [
                self._upper[:n_head],
                np.tile(per_level_hi, n_levels),
                np.full(N_STAGES, LEVELS_PER_STAGE),
                [n_levels, n_levels, n_levels, n_levels * max(EXPANDS) * max(KERNELS) ** 2],
                np.full(4, n_levels),
            ]
        )
        # every decoded feature after the head counts from 0: the bounds' length is hi's
        lo = np.concatenate([self._lower[:n_head], np.zeros(len(hi) - n_head)])
        return lo.astype(np.float64), hi.astype(np.float64)

    def _decode(self, v: np.ndarray) -> np.ndarray:
        """The ``decoded`` features of in-bounds vectors ``v`` (vectorised over rows)."""
        space, n = self.space, len(v)
        codes = v[:, space.level_offset :].reshape(n, N_STAGES, LEVELS_PER_STAGE)
        pairs = np.asarray(EK_PAIRS)
        on = codes > 0
        if space.has_exits:  # stages after the exit are never run
            exit_stage = v[:, 2]  # 0-based index of the exit
            on &= (np.arange(N_STAGES)[None, :] <= exit_stage[:, None])[:, :, None]
        if space.parallel:
            mask = np.where(on, (codes - 1) // len(EK_PAIRS) + 1, 0)
            pair = np.where(on, (codes - 1) % len(EK_PAIRS), 0)
        else:
            mask = np.where(on, 1, 0)
            pair = np.where(on, codes - 1, 0)
        irb = (mask & 1) > 0
        expand = np.where(irb, pairs[pair, 0], 0)
        kernel = np.where(irb, pairs[pair, 1], 0)
        fields = np.stack(
            [on, irb, (mask & 2) > 0, (mask & 4) > 0, expand, kernel], axis=-1
        ).reshape(n, -1)
        depth = on.sum(axis=2)
        totals = np.stack(
            [
                on.sum(axis=(1, 2)),
                irb.sum(axis=(1, 2)),
                (on & ~irb).sum(axis=(1, 2)),
                (expand * kernel**2).sum(axis=(1, 2)),
            ],
            axis=1,
        )
        branch_only = on & ~irb
        kinds = np.stack(
            [
                (on & (mask == 2)).sum(axis=(1, 2)),  # pointwise branch alone
                (on & (mask == 4)).sum(axis=(1, 2)),  # transformation branch alone
                (on & (mask == 6)).sum(axis=(1, 2)),  # both, no IRB
                _longest_run(branch_only.reshape(n, -1), on.reshape(n, -1)),
            ],
            axis=1,
        )
        head = v[:, : space.level_offset]
        return np.concatenate([head, fields, depth, totals, kinds], axis=1).astype(np.float64)

    @property
    def n_features(self) -> int:
        return len(self.lo)

    def feature_names(self) -> list[str]:
        genes = self.space.gene_names()
        if self.kind == "integer":
            return genes
        if self.kind == "decoded":
            return self._decoded_names()
        return [
            f"{g}={v}"
            for g, lo, hi in zip(genes, self._lower, self._upper, strict=True)
            for v in range(lo, hi + 1)
        ]

    def check(self, X: Any) -> np.ndarray:
        """``X`` as an ``(n, L)`` int64 array inside the space's bounds, or Natv2Error."""
        try:
            v = np.asarray(X)
            if v.dtype.kind == "f" and (not np.all(np.isfinite(v)) or np.any(v != np.round(v))):
                raise ValueError("non-integer genes")
            v = v.astype(np.int64)
        except (TypeError, ValueError):
            raise Natv2Error("encoding vectors must be integers") from None
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != self.space.length:
            raise Natv2Error(
                f"encoding {self.space.encoding!r} has {self.space.length} genes, "
                f"got vectors of shape {v.shape}"
            )
        bad = (v < self._lower) | (v > self._upper)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise Natv2Error(
                f"vector {row}: position {col + 1} ({self.space.gene_names()[col]}) is "
                f"{v[row, col]}, allowed range is {self._lower[col]}..{self._upper[col]}"
            )
        return v

    def transform(self, X: Any) -> np.ndarray:
        v = self.check(X)
        if self.kind == "integer":
            return v.astype(np.float64)
        if self.kind == "decoded":
            return self._decode(v)
        out = np.zeros((len(v), self.n_features))
        cols = self._offsets[None, :] + (v - self._lower[None, :])
        out[np.arange(len(v))[:, None], cols] = 1.0
        return out

    def unit(self, features: np.ndarray) -> np.ndarray:
        """Features min-max scaled to [0, 1] by their bounds (constant genes become 0)."""
        span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
        return (features - self.lo) / span


# --------------------------------------------------------------------------------------------
# Predictors
# --------------------------------------------------------------------------------------------


class Predictor:
    """An accuracy predictor: encoding vectors -> accuracy. Build with ``make_predictor``.

    Wraps a regressor ``build(seed, n_samples) -> estimator`` (anything with sklearn's
    ``fit``/``predict``) with the feature encoding, optional [0, 1] input scaling and target
    standardisation.
    """

    def __init__(
        self,
        name: str,
        build: Callable[[int, int], Any],
        *,
        seed: int = 0,
        features: str = "integer",
        space: SearchSpace | None = None,
        scale_inputs: bool = False,
        params: dict | None = None,
    ) -> None:
        if features not in FEATURES:
            raise Natv2Error(f"unknown features {features!r}; choose one of: {', '.join(FEATURES)}")
        self.name = name
        self.seed = int(seed)
        self.features = features
        self.space = space
        self.scale_inputs = scale_inputs
        self.params = dict(params or {})
        self._build = build
        self.model_: Any = None
        self.encoder_: FeatureEncoder | None = None
        self.y_mean_ = 0.0
        self.y_scale_ = 1.0

    def __repr__(self) -> str:
        return f"Predictor({self.name!r}, seed={self.seed}, features={self.features!r})"

    def _features(self, X: Any) -> np.ndarray:
        assert self.encoder_ is not None
        F = self.encoder_.transform(X)
        return self.encoder_.unit(F) if self.scale_inputs else F

    def fit(self, X: Any, y: Any) -> Predictor:
        X = np.asarray(X)
        if X.ndim != 2 or len(X) == 0:
            raise Natv2Error(f"fit needs an (n, L) array of encoding vectors, got shape {X.shape}")
        space = self.space or default_space(X.shape[1])
        self.encoder_ = FeatureEncoder(space, self.features)
        F = self._features(X)
        y = _targets(y, len(F))
        self.y_mean_ = float(y.mean())
        spread = float(y.std())
        self.y_scale_ = spread if spread > 1e-12 else 1.0
        model = self._build(self.seed, len(F))
        with _single_blas_thread(), warnings.catch_warnings():
            # lbfgs iteration limits (mlp) and kernel bounds (gp) are expected on small archives.
            from sklearn.exceptions import ConvergenceWarning

            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(F, (y - self.y_mean_) / self.y_scale_)
        self.model_ = model
        return self

    def predict(self, X: Any) -> np.ndarray:
        if self.model_ is None:
            raise Natv2Error(f"predictor {self.name!r} is not fitted: call fit(X, y) first")
        F = self._features(X)
        with _single_blas_thread():
            z = np.asarray(self.model_.predict(F), dtype=np.float64).reshape(-1)
        return z * self.y_scale_ + self.y_mean_


class FoldEnsembleRegressor:
    """k-fold cross-validation ensemble: k models, each fitted on k-1 folds, averaged.

    The paper's macro-model: the models of a ten-fold cross-validation are kept and their
    predictions averaged. ``fold_models_`` holds them; ``oof_`` holds every training sample's
    prediction by the one model that did not see it (its out-of-fold prediction). With fewer
    samples than folds, ``min(folds, n)`` folds are used; with a single sample, one model on
    everything.
    """

    def __init__(self, make_model: Callable[[int], Any], folds: int = 10, seed: int = 0) -> None:
        self.make_model = make_model
        self.folds = folds
        self.seed = seed
        self.fold_models_: list[Any] = []
        self.oof_: np.ndarray | None = None

    def fit(self, F: np.ndarray, z: np.ndarray) -> FoldEnsembleRegressor:
        k = min(self.folds, len(F))
        self.fold_models_ = []
        if k < 2:
            self.fold_models_.append(self.make_model(self.seed).fit(F, z))
            self.oof_ = None
            return self
        oof = np.empty(len(F))
        for i, (train, test) in enumerate(_kfold(len(F), k, self.seed)):
            model = self.make_model(self.seed + i).fit(F[train], z[train])
            oof[test] = model.predict(F[test])
            self.fold_models_.append(model)
        self.oof_ = oof
        return self

    def predict_folds(self, F: np.ndarray) -> np.ndarray:
        """``(k, n)``: every fold model's prediction."""
        return np.stack([_predict(m, F) for m in self.fold_models_])

    def predict(self, F: np.ndarray) -> np.ndarray:
        return self.predict_folds(F).mean(axis=0)


def _predict(model: Any, F: np.ndarray) -> np.ndarray:
    # A fitted LightGBM model: its booster directly (same numbers, about 2.5x faster than the
    # sklearn wrapper's input validation for a population of 100).
    booster = getattr(model, "booster_", None) if hasattr(model, "fitted_") else None
    out = booster.predict(F) if booster is not None else model.predict(F)
    return np.asarray(out, dtype=np.float64).reshape(-1)


class EnsemblePredictor(Predictor):
    """A ``Predictor`` over a ``FoldEnsembleRegressor`` (the ``lgbm`` default)."""

    @property
    def fold_models(self) -> list[Any]:
        return [] if self.model_ is None else list(self.model_.fold_models_)

    def predict_folds(self, X: Any) -> np.ndarray:
        """``(k, n)``: every fold model's predicted accuracy; ``predict`` is their mean."""
        if self.model_ is None:
            raise Natv2Error(f"predictor {self.name!r} is not fitted: call fit(X, y) first")
        with _single_blas_thread():
            z = self.model_.predict_folds(self._features(X))
        return z * self.y_scale_ + self.y_mean_

    @property
    def oof_predictions(self) -> np.ndarray | None:
        """Out-of-fold predicted accuracies of the training samples (free self-check)."""
        if self.model_ is None or self.model_.oof_ is None:
            return None
        return self.model_.oof_ * self.y_scale_ + self.y_mean_


_BLAS: Any = None


def _single_blas_thread():
    """Context: BLAS on one thread. At these sizes threads only add overhead, and on a busy
    two-core machine OpenBLAS's spinning threads made a 300-sample kernel fit 30x slower."""
    global _BLAS
    if _BLAS is None:
        import scipy.linalg  # noqa: F401  (load every BLAS the models use before scanning)
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def _targets(y: Any, n: int) -> np.ndarray:
    try:
        y = np.asarray(y, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise Natv2Error("accuracies must be numbers") from None
    if len(y) != n:
        raise Natv2Error(f"{n} encoding vectors but {len(y)} accuracies")
    if not np.all(np.isfinite(y)):
        raise Natv2Error("accuracies must be finite numbers")
    return y


def _kfold(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold split (sizes differ by at most one), deterministic in ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    splits = []
    for test in np.array_split(order, k):
        mask = np.ones(n, dtype=bool)
        mask[test] = False
        splits.append((np.flatnonzero(mask), np.sort(test)))
    return splits


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictorFactory:
    """One registry entry: ``factory(seed=0, features="integer", space=None, **params)``.

    ``defaults`` are the documented hyper-parameters; keyword ``params`` override them.
    ``requires`` names an optional module: when it cannot be imported, calling the factory
    raises Natv2Error saying which extra to install.
    """

    name: str
    description: str
    defaults: dict[str, Any]
    build: Callable[[dict[str, Any], int, int], Any]  # (params, seed, n_samples) -> estimator
    scale_inputs: bool = False
    ensemble: bool = False
    requires: str | None = None
    extra: str | None = None
    modules: tuple[str, ...] = field(default=())  # what ``preload`` imports

    def preload(self) -> None:
        """Import the model's libraries now, so that a timed fit does not pay for them."""
        import importlib

        for module in ("sklearn.exceptions", *self.modules):
            importlib.import_module(module)
        _single_blas_thread()

    @property
    def available(self) -> bool:
        if self.requires is None:
            return True
        import importlib.util

        return importlib.util.find_spec(self.requires) is not None

    def __call__(
        self,
        seed: int = 0,
        features: str = "integer",
        space: SearchSpace | None = None,
        **params: Any,
    ) -> Predictor:
        if not self.available:
            raise Natv2Error(
                f"predictor {self.name!r} needs {self.requires}, which is not installed: "
                f"pip install 'natv2[{self.extra or self.requires}]'"
            )
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise Natv2Error(
                f"predictor {self.name!r} has no hyper-parameter {', '.join(unknown)}; "
                f"it takes: {', '.join(self.defaults)}"
            )
        merged = {**self.defaults, **params}
        cls = EnsemblePredictor if self.ensemble else Predictor
        return cls(
            self.name,
            lambda s, n: self.build(merged, s, n),
            seed=seed,
            features=features,
            space=space,
            scale_inputs=self.scale_inputs,
            params=merged,
        )


# --- builders (each imports its library lazily) ---------------------------------------------


def _lgbm_model(p: dict[str, Any], seed: int):
    from lightgbm import LGBMRegressor

    return LGBMRegressor(
        objective="huber",
        alpha=p["huber_delta"],
        n_estimators=p["n_estimators"],
        learning_rate=p["learning_rate"],
        num_leaves=p["num_leaves"],
        max_depth=p["max_depth"],
        min_child_samples=p["min_child_samples"],
        subsample=p["subsample"],
        subsample_freq=1 if p["subsample"] < 1.0 else 0,
        colsample_bytree=p["colsample_bytree"],
        reg_lambda=p["reg_lambda"],
        random_state=seed,
        n_jobs=p["n_jobs"],
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )


def _build_lgbm(p: dict[str, Any], seed: int, n: int):
    return FoldEnsembleRegressor(lambda s: _lgbm_model(p, s), folds=p["folds"], seed=seed)


def _build_gp(p: dict[str, Any], seed: int, n: int):
    return _GP(p, seed)


class _GP:
    """sklearn's Gaussian process, constant * RBF + white noise kernel.

    The kernel's hyper-parameters are fitted by maximum marginal likelihood on at most
    ``max_opt_samples`` random samples (each likelihood step is cubic in the samples); the
    process is then conditioned on all of them with that kernel.
    """

    def __init__(self, p: dict[str, Any], seed: int) -> None:
        self.p = p
        self.seed = seed
        self.model: Any = None

    def fit(self, F: np.ndarray, z: np.ndarray) -> _GP:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        p = self.p
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * RBF(p["length_scale"], (1e-2, 1e3))
        kernel = kernel + WhiteKernel(p["noise"], (1e-5, 1e1))
        gp = GaussianProcessRegressor(
            kernel=kernel, n_restarts_optimizer=p["n_restarts_optimizer"], random_state=self.seed
        )
        if len(F) > p["max_opt_samples"]:
            rng = np.random.default_rng(self.seed)
            rows = rng.choice(len(F), size=p["max_opt_samples"], replace=False)
            tuned = gp.fit(F[rows], z[rows]).kernel_
            gp = GaussianProcessRegressor(kernel=tuned, optimizer=None)
        self.model = gp.fit(F, z)
        return self

    def predict(self, F: np.ndarray) -> np.ndarray:
        return self.model.predict(F)


def _build_rbf(p: dict[str, Any], seed: int, n: int):
    return _RBFKernelRidge(alpha=p["alpha"], gamma_scale=p["gamma_scale"])


def _sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(axis=1)[:, None] + (B * B).sum(axis=1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(d, 0.0)


class _RBFKernelRidge:
    """Kernel ridge regression with the RBF kernel exp(-gamma |a - b|^2), gamma =
    gamma_scale / n_features (inputs in [0, 1]): solve (K + alpha I) c = z; predict K(x, X) c.
    """

    def __init__(self, alpha: float, gamma_scale: float) -> None:
        self.alpha = alpha
        self.gamma_scale = gamma_scale
        self.gamma = 1.0
        self.X = np.empty((0, 0))
        self.coef = np.empty(0)

    def fit(self, F: np.ndarray, z: np.ndarray) -> _RBFKernelRidge:
        from scipy.linalg import solve

        self.gamma = self.gamma_scale / max(F.shape[1], 1)
        self.X = np.array(F, dtype=np.float64)
        K = np.exp(-self.gamma * _sq_distances(self.X, self.X))
        K[np.diag_indices_from(K)] += self.alpha
        self.coef = solve(K, z, assume_a="pos")
        return self

    def predict(self, F: np.ndarray) -> np.ndarray:
        return np.exp(-self.gamma * _sq_distances(F, self.X)) @ self.coef


class _BaggedRBF:
    """NAT's RBF ensemble: ``n_members`` RBF models, each fitted on a bootstrap sample (of at
    most ``max_samples`` rows) and a random ``max_features`` share of the genes, averaged."""

    def __init__(self, p: dict[str, Any], seed: int) -> None:
        self.p = p
        self.seed = seed
        self.members: list[tuple[np.ndarray, _RBFKernelRidge]] = []

    def fit(self, F: np.ndarray, z: np.ndarray) -> _BaggedRBF:
        rng = np.random.default_rng(self.seed)
        n, d = F.shape
        n_rows = min(n, self.p["max_samples"])
        n_feat = max(1, round(self.p["max_features"] * d))
        self.members = []
        for _ in range(self.p["n_members"]):
            rows = rng.integers(0, n, size=n_rows)
            cols = np.sort(rng.choice(d, size=n_feat, replace=False))
            member = _RBFKernelRidge(self.p["alpha"], self.p["gamma_scale"])
            self.members.append((cols, member.fit(F[np.ix_(rows, cols)], z[rows])))
        return self

    def predict(self, F: np.ndarray) -> np.ndarray:
        return np.mean([m.predict(F[:, cols]) for cols, m in self.members], axis=0)


def _build_rbf_ensemble(p: dict[str, Any], seed: int, n: int):
    return _BaggedRBF(p, seed)


def _build_mlp(p: dict[str, Any], seed: int, n: int):
    from sklearn.neural_network import MLPRegressor

    return MLPRegressor(
        hidden_layer_sizes=tuple(p["hidden_layer_sizes"]),
        alpha=p["alpha"],
        solver="lbfgs",
        max_iter=p["max_iter"],
        random_state=seed,
    )


def _build_cart(p: dict[str, Any], seed: int, n: int):
    from sklearn.tree import DecisionTreeRegressor

    return DecisionTreeRegressor(
        max_depth=p["max_depth"], min_samples_leaf=p["min_samples_leaf"], random_state=seed
    )


def _build_svr(p: dict[str, Any], seed: int, n: int):
    from sklearn.svm import SVR

    return SVR(kernel="rbf", C=p["C"], epsilon=p["epsilon"], gamma="scale")


def _build_ridge(p: dict[str, Any], seed: int, n: int):
    from sklearn.linear_model import Ridge

    return Ridge(alpha=p["alpha"])


def _build_knn(p: dict[str, Any], seed: int, n: int):
    from sklearn.neighbors import KNeighborsRegressor

    return KNeighborsRegressor(n_neighbors=min(p["n_neighbors"], n), weights=p["weights"])


def _build_bayesian_ridge(p: dict[str, Any], seed: int, n: int):
    from sklearn.linear_model import BayesianRidge

    return BayesianRidge()


def _build_e2epp(p: dict[str, Any], seed: int, n: int):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        n_estimators=p["n_estimators"],
        max_features=p["max_features"],
        min_samples_leaf=p["min_samples_leaf"],
        random_state=seed,
        n_jobs=1,
    )


def _build_catboost(p: dict[str, Any], seed: int, n: int):
    from catboost import CatBoostRegressor

    return CatBoostRegressor(
        iterations=p["iterations"],
        depth=p["depth"],
        learning_rate=p["learning_rate"],
        loss_function=f"Huber:delta={p['huber_delta']}",
        random_seed=seed,
        thread_count=p["thread_count"],
        verbose=False,
        allow_writing_files=False,
    )


_MODULES = {
    "lgbm": ("lightgbm",),
    "gp": ("sklearn.gaussian_process", "scipy.linalg"),
    "rbf": ("scipy.linalg",),
    "rbf_ensemble": ("scipy.linalg",),
    "mlp": ("sklearn.neural_network",),
    "cart": ("sklearn.tree",),
    "svr": ("sklearn.svm",),
    "ridge": ("sklearn.linear_model",),
    "knn": ("sklearn.neighbors",),
    "bayesian_ridge": ("sklearn.linear_model",),
    "e2epp": ("sklearn.ensemble",),
    "catboost": ("catboost",),
}


def _entry(name: str, description: str, build, defaults: dict[str, Any], **kw) -> PredictorFactory:
    return PredictorFactory(name, description, defaults, build, modules=_MODULES[name], **kw)


PREDICTORS: dict[str, PredictorFactory] = {
    f.name: f
    for f in (
        _entry(
            "lgbm",
            "LightGBM, Huber objective, ten-fold CV ensemble (paper's choice)",
            _build_lgbm,
            {
                # Ten fold models of 150 small trees: about 1 s for 300 samples on one core.
                "folds": 10,
                "n_estimators": 150,
                "learning_rate": 0.05,
                "num_leaves": 8,
                "max_depth": 4,
                "min_child_samples": 5,  # a fold of 50 samples still grows trees
                "subsample": 0.8,
                "colsample_bytree": 0.8,
                "reg_lambda": 1.0,
                "huber_delta": 1.0,  # in standard deviations of the archive's accuracies
                "n_jobs": 1,
            },
            ensemble=True,
        ),
        _entry(
            "gp",
            "Gaussian process, constant * RBF + white noise, marginal-likelihood fit",
            _build_gp,
            {
                "length_scale": 1.0,
                "noise": 0.1,
                "n_restarts_optimizer": 0,
                "max_opt_samples": 1000,
            },
            scale_inputs=True,
        ),
        _entry(
            "rbf",
            "kernel ridge regression, RBF kernel",
            _build_rbf,
            {"alpha": 0.1, "gamma_scale": 1.0},
            scale_inputs=True,
        ),
        _entry(
            "rbf_ensemble",
            "bagged RBF kernel ridge models on sample and gene subsets (NAT's RBF ensemble)",
            _build_rbf_ensemble,
            {
                "n_members": 50,
                "max_samples": 500,
                "max_features": 0.7,
                "alpha": 0.1,
                "gamma_scale": 1.0,
            },
            scale_inputs=True,
        ),
        _entry(
            "mlp",
            "multilayer perceptron, one hidden layer of 32, L2 1.0, L-BFGS",
            _build_mlp,
            {"hidden_layer_sizes": (32,), "alpha": 1.0, "max_iter": 300},
            scale_inputs=True,
        ),
        _entry(
            "cart",
            "a single regression tree (CART)",
            _build_cart,
            {"max_depth": None, "min_samples_leaf": 3},
        ),
        _entry(
            "svr",
            "support vector regression, RBF kernel",
            _build_svr,
            {"C": 3.0, "epsilon": 0.05},
            scale_inputs=True,
        ),
        _entry("ridge", "ridge regression", _build_ridge, {"alpha": 1.0}, scale_inputs=True),
        _entry(
            "knn",
            "k nearest neighbours, distance-weighted",
            _build_knn,
            {"n_neighbors": 7, "weights": "distance"},
            scale_inputs=True,
        ),
        _entry(
            "bayesian_ridge",
            "Bayesian ridge regression",
            _build_bayesian_ridge,
            {},
            scale_inputs=True,
        ),
        _entry(
            "e2epp",
            "random forest of CART trees on gene subsets (E2EPP-like)",
            _build_e2epp,
            {"n_estimators": 100, "max_features": 0.5, "min_samples_leaf": 1},
        ),
        _entry(
            "catboost",
            "CatBoost, Huber loss (optional extra natv2[catboost])",
            _build_catboost,
            {
                "iterations": 500,
                "depth": 4,
                "learning_rate": 0.05,
                "huber_delta": 1.0,
                "thread_count": 1,
            },
            requires="catboost",
            extra="catboost",
        ),
    )
}


def available_predictors() -> list[str]:
    """Registered predictors whose libraries are installed (catboost only when importable)."""
    return [name for name, f in PREDICTORS.items() if f.available]


def make_predictor(
    name: str = DEFAULT_PREDICTOR,
    seed: int = 0,
    features: str = "integer",
    space: SearchSpace | None = None,
    **params: Any,
) -> Predictor:
    """Build predictor ``name`` (a key of PREDICTORS); ``params`` override its defaults.

    ``space`` gives the gene bounds (one-hot widths, range checks); without it they follow
    from the vectors' length at fit time (``default_space``).
    """
    if name not in PREDICTORS:
        raise Natv2Error(f"unknown predictor {name!r}; choose from: {', '.join(PREDICTORS)}")
    return PREDICTORS[name](seed=seed, features=features, space=space, **params)


def parse_predictor_names(text: str | None) -> list[str]:
    """``"lgbm,gp"`` -> names (checked); None or empty -> every available predictor."""
    if not text or not text.strip():
        return available_predictors()
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PREDICTORS]
    if unknown:
        raise Natv2Error(
            f"unknown predictor {', '.join(map(repr, unknown))}; choose from: "
            f"{', '.join(PREDICTORS)}"
        )
    for n in names:
        f = PREDICTORS[n]
        if not f.available:
            f()  # raises the "install natv2[...]" error
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------
# Cross-validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CVResult:
    """Out-of-fold quality of a predictor; fit_seconds is the mean wall time of one fold's fit."""

    spearman_rho: float
    kendall_tau: float
    rmse: float
    fit_seconds: float

    def to_dict(self) -> dict[str, float | None]:
        return {k: (None if not np.isfinite(v) else float(v)) for k, v in self.__dict__.items()}


def rank_correlations(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """(Spearman rho, Kendall tau); nan when either side is constant."""
    from scipy.stats import kendalltau, spearmanr

    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if len(y_true) < 2 or np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return float("nan"), float("nan")
    return float(spearmanr(y_true, y_pred)[0]), float(kendalltau(y_true, y_pred)[0])


def cross_validate(
    name: str,
    X: Any,
    y: Any,
    folds: int = 10,
    seed: int = 0,
    features: str = "integer",
    space: SearchSpace | None = None,
    **params: Any,
) -> CVResult:
    """k-fold cross-validation of predictor ``name``: rank correlations and RMSE of the pooled
    out-of-fold predictions, and the mean seconds one fold's fit took.

    For ``lgbm`` every fold fit is the full ten-fold ensemble, i.e. what the search pays per
    iteration and the model it then uses.
    """
    X = np.asarray(X)
    y = _targets(y, len(X))
    if folds < 2:
        raise Natv2Error(f"cross-validation needs at least 2 folds, got {folds}")
    if len(X) < folds:
        raise Natv2Error(
            f"{folds}-fold cross-validation needs at least {folds} samples, got {len(X)}"
        )
    if name in PREDICTORS and PREDICTORS[name].available:
        PREDICTORS[name].preload()
    oof = np.empty(len(X))
    seconds = []
    for train, test in _kfold(len(X), folds, seed):
        predictor = make_predictor(name, seed=seed, features=features, space=space, **params)
        start = time.perf_counter()
        predictor.fit(X[train], y[train])
        seconds.append(time.perf_counter() - start)
        oof[test] = predictor.predict(X[test])
    rho, tau = rank_correlations(y, oof)
    rmse = float(np.sqrt(np.mean((oof - y) ** 2)))
    return CVResult(rho, tau, rmse, float(np.mean(seconds)))


# --------------------------------------------------------------------------------------------
# A synthetic, structured target (tests and benchmarks only; no network is trained)
# --------------------------------------------------------------------------------------------


def synthetic_accuracy(
    space: SearchSpace,
    vectors: Sequence[Sequence[int]] | np.ndarray,
    noise: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    """A made-up accuracy for canonical ``vectors`` plus Gaussian noise of std ``noise``.

    SYNTHETIC: it only stands in for measured accuracies where no archive exists (tests,
    benchmarks); no network is trained. Smooth in exit, depth, expand, kernel, branches,
    resolution and width: a block is worth more with a larger expand and kernel and far more with
    an IRB than with the pointwise/transformation branches alone; a stage's capacity is the sum of
    its active blocks; accuracy rises with the exit, saturates in the weighted capacity of the
    stages run, is held back by the weakest stage run, and gains a little from resolution, width
    and (at high resolution) larger kernels.
    """
    v = np.asarray(vectors, dtype=np.int64).reshape(-1, space.length)
    n = len(v)
    r = v[:, 0] / max(1, len(space.grid) - 1)
    w = v[:, 1].astype(np.float64)
    exit_ = v[:, 2] + 1 if space.has_exits else np.full(n, N_STAGES)
    codes = v[:, space.level_offset :].reshape(n, N_STAGES, LEVELS_PER_STAGE)
    active = codes > 0
    ek = np.where(active, (codes - 1) % len(EK_PAIRS), 0)
    if space.parallel:
        branches = np.where(active, (codes - 1) // len(EK_PAIRS) + 1, 0)
    else:
        branches = active.astype(np.int64)
    expand = np.asarray(EXPANDS)[ek // len(KERNELS)]
    kernel = np.asarray(KERNELS)[ek % len(KERNELS)]
    irb = active & ((branches & 1) > 0)
    block = irb * (0.5 + 0.35 * (expand - 3) / 3 + 0.25 * (kernel - 3) / 4)
    block = block + 0.15 * ((branches & 2) > 0) + 0.1 * ((branches & 4) > 0)
    stage_capacity = np.where(active, block, 0.0).sum(axis=2)
    reached = np.arange(N_STAGES)[None, :] < exit_[:, None]
    stage_weight = np.array([0.6, 0.8, 1.0, 1.2, 1.4])
    capacity = (stage_capacity * stage_weight * reached).sum(axis=1)
    weakest = np.where(reached, stage_capacity, np.inf).min(axis=1)
    mean_kernel = np.where(irb, kernel, 0).sum(axis=(1, 2)) / np.maximum(irb.sum(axis=(1, 2)), 1)
    acc = (
        np.array([0.64, 0.68, 0.71, 0.73, 0.745])[exit_ - 1]
        + 0.15 * (1.0 - np.exp(-capacity / 6.0))
        + 0.03 * (1.0 - np.exp(-weakest))
        + 0.03 * r
        + 0.02 * w
        + 0.02 * r * (mean_kernel - 3) / 4
    )
    acc = acc + np.random.default_rng(seed).normal(0.0, noise, size=n)
    return np.clip(acc, 0.0, 1.0)
