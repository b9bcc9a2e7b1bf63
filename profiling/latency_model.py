"""The latency model of searches whose profile measures latency (``latency = "measure"``).

NSGA-III needs a latency for every candidate it considers, but only the subnets the search
evaluates are timed (onnxruntime on this host, the float ONNX file of the plain module: what
``natv2 export`` and ``natv2 validate`` time). On a CPU a small CNN spends its time in
per-operator overhead as much as in arithmetic, so the model is linear in MACs and in the
counts of what runs::

    ms = a + b * MMACs + c * IRBs + d * other branches + e * squeeze-excites

(``latency_features``), fitted by non-negative least squares (``scipy.optimize.nnls``: more work
never predicts less time) on every measurement of the search and refitted after each batch of
evaluations. Its error is the leave-one-out mean absolute percentage error over those
measurements, logged whenever it is fitted and kept in the run's history. OFA builds a per-block
latency lookup table in a separate profiling pass instead; with the tiny space's blocks of a few
operators and a shared, noisy host, five coefficients fitted on the search's own measurements
need no such pass. Pure numpy and scipy: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from natv2.errors import Natv2Error
from natv2.space import LEVELS_PER_STAGE, Arch
from natv2.supernet.config import STAGE_SE

#: what each coefficient multiplies (``latency_features``), in order
FEATURES: tuple[str, ...] = ("1", "MMACs", "IRBs", "other branches", "squeeze-excites")
#: the fewest measurements a model is fitted on
MIN_SAMPLES = len(FEATURES) + 1


def latency_features(arch: Arch, macs: int) -> np.ndarray:
    """The model's inputs for ``arch`` (``macs`` from the cost model): see module docstring."""
    irbs = others = se = 0
    for stage in range(arch.exit):
        for block in arch.levels[LEVELS_PER_STAGE * stage : LEVELS_PER_STAGE * (stage + 1)]:
            if block is None:
                continue
            irbs += block.has_irb
            others += block.has_pointwise + block.has_transform
            se += block.has_irb and STAGE_SE[stage]
    return np.array([1.0, macs / 1e6, irbs, others, se])


@dataclass(frozen=True)
class LatencyModel:
    """Milliseconds on this host from ``latency_features``; ``loo_mape`` its measured error."""

    coef: tuple[float, ...]
    samples: int
    loo_mape: float

    @staticmethod
    def fit(features: Sequence[np.ndarray], ms: Sequence[float]) -> LatencyModel:
        from scipy.optimize import nnls

        X = np.asarray(features, dtype=float)
        y = np.asarray(ms, dtype=float)
        if len(y) < MIN_SAMPLES:
            raise Natv2Error(
                f"the latency model needs at least {MIN_SAMPLES} measured subnets, got {len(y)}"
            )
        coef, _ = nnls(X, y)
        errors = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            c, _ = nnls(X[keep], y[keep])
            errors.append(abs(float(X[i] @ c) - y[i]) / max(y[i], 1e-9))
        return LatencyModel(tuple(float(c) for c in coef), len(y), float(np.mean(errors)))

    def predict(self, features: np.ndarray) -> float:
        return float(np.asarray(features, dtype=float) @ np.asarray(self.coef))

    def to_dict(self) -> dict[str, object]:
        return {
            "features": list(FEATURES),
            "coef_ms": list(self.coef),
            "samples": self.samples,
            "loo_mape": self.loo_mape,
        }


def fit_from_records(records: Sequence[tuple[Arch, int, float]]) -> LatencyModel | None:
    """A model from (arch, MACs, measured ms) triples, or None with too few of them."""
    if len(records) < MIN_SAMPLES:
        return None
    features = [latency_features(arch, macs) for arch, macs, _ in records]
    return LatencyModel.fit(features, [ms for *_, ms in records])


__all__ = ["FEATURES", "MIN_SAMPLES", "LatencyModel", "fit_from_records", "latency_features"]
