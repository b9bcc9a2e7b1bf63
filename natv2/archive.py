"""The archive of evaluated subnets and how NATv2 ranks, trims and reports it.

Ranking is non-dominated sorting on the search objectives (error and the profile's costs, all
minimised) with crowding distance inside each front; feasible subnets always rank before
infeasible ones (constraint domination). Infeasible subnets can sit in the archive: the maximal
subnet is kept at pre-processing even when it is over budget, because it anchors the predictor at
the top of the accuracy range. They are never returned: the front and the high trade-off set are
computed over feasible subnets only, and NSGA-III treats every budget as a hard constraint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymoo.mcdm.high_tradeoff import HighTradeoffPoints
from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

# ``objectives`` below are subnet record keys, accuracy first (``SearchJob.objective_keys``:
# the profile decides which figure measures each objective)


def objective_matrix(records: Sequence[dict], objectives: Sequence[str]) -> np.ndarray:
    """Minimisation matrix: 1 - accuracy for ``accuracy``, the raw cost for the others."""
    cols = []
    for name in objectives:
        values = np.array([float(r[name]) for r in records])
        cols.append(1.0 - values if name == "accuracy" else values)
    return np.stack(cols, axis=1) if cols else np.zeros((len(records), 0))


def rank_order(records: Sequence[dict], objectives: Sequence[str]) -> np.ndarray:
    """Indices of ``records`` from best to worst: feasibility, front rank, crowding."""
    n = len(records)
    if n == 0:
        return np.zeros(0, dtype=int)
    F = objective_matrix(records, objectives)
    feasible = np.array([bool(r.get("feasible", True)) for r in records])
    rank = np.full(n, np.inf)
    crowd = np.zeros(n)
    offset = 0
    for group in (np.flatnonzero(feasible), np.flatnonzero(~feasible)):
        if len(group) == 0:
            continue
        fronts = NonDominatedSorting().do(F[group]) if F.shape[1] > 1 else _scalar_fronts(F[group])
        for k, front in enumerate(fronts):
            idx = group[front]
            rank[idx] = offset + k
            crowd[idx] = calc_crowding_distance(F[idx]) if len(idx) > 2 else np.inf
        offset += len(fronts)
    return np.lexsort((-crowd, rank))


def _scalar_fronts(F: np.ndarray) -> list[np.ndarray]:
    values = F[:, 0]
    return [np.flatnonzero(values == v) for v in np.unique(values)]


def keep_best(records: Sequence[dict], k: int, objectives: Sequence[str]) -> list[dict]:
    """The ``k`` best records (NATv2's replacement drops the rest, the weakest)."""
    order = rank_order(records, objectives)
    return [records[i] for i in sorted(order[:k])]


def front(records: Sequence[dict], objectives: Sequence[str]) -> list[dict]:
    """Feasible non-dominated records, sorted by their first cost (or accuracy)."""
    feas = [r for r in records if r.get("feasible", True)]
    if not feas:
        return []
    F = objective_matrix(feas, objectives)
    if F.shape[1] == 1:
        best = F[:, 0].min()
        nd = [i for i in range(len(feas)) if F[i, 0] == best]
    else:
        nd = list(NonDominatedSorting().do(F, only_non_dominated_front=True))
    out = [feas[i] for i in nd]
    key = objectives[1] if len(objectives) > 1 else "accuracy"
    return sorted(out, key=lambda r: (r[key], -r["accuracy"]))


def tradeoff_measure(Fn: np.ndarray) -> np.ndarray:
    """NAT's trade-off of each point of a normalised front: the least sacrifice per unit of
    gain against its neighbours (pymoo's neighbourhood, as ``HighTradeoffPoints`` uses it);
    a high value is a point one gives up much to leave."""
    from pymoo.core.decision_making import NeighborFinder

    finder = NeighborFinder(Fn, epsilon=0.125, n_min_neigbors="auto", consider_2d=False)
    mu = np.full(len(Fn), -np.inf)
    for i in range(len(Fn)):
        diff = Fn[finder.find(i)] - Fn[i]
        sacrifice = np.maximum(0, diff).sum(axis=1)
        gain = np.maximum(0, -diff).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = sacrifice / gain
        if not np.isnan(ratio).all():
            mu[i] = np.nanmin(ratio)
    return mu


def high_tradeoff(
    front_records: Sequence[dict], objectives: Sequence[str], top_k: int | None = None
) -> list[dict]:
    """NAT's high trade-off subnets of a front: pymoo's HighTradeoffPoints (the outliers of the
    trade-off measure) on normalised objectives, or with ``top_k`` NAT's fixed number, the
    ``top_k`` highest trade-offs; the extremes of the front are always included."""
    n = len(front_records)
    if n <= 2 or len(objectives) < 2:
        return list(front_records)
    F = objective_matrix(front_records, objectives)
    span = F.max(axis=0) - F.min(axis=0)
    span[span == 0] = 1.0
    Fn = (F - F.min(axis=0)) / span
    picked = set(np.flatnonzero(np.isclose(Fn, 0).any(axis=1)).tolist())
    if top_k is not None:
        order = np.argsort(-tradeoff_measure(Fn), kind="stable")
        picked |= {int(i) for i in order[:top_k]}
        return [front_records[i] for i in sorted(picked)]
    try:
        found = HighTradeoffPoints().do(Fn)
    except (ValueError, IndexError):  # too few neighbours for pymoo's outlier test
        found = None
    if found is not None:
        picked |= {int(i) for i in np.atleast_1d(found)}
    return [front_records[i] for i in sorted(picked)]


def select_candidates(F: np.ndarray, k: int) -> list[int]:
    """Which ``k`` rows of the predicted objectives ``F`` (minimised, column 0 the predicted
    error) to evaluate. One objective: NAT's top-k predicted (spreading over the predicted
    range would spend evaluations on the predicted worst); several: spread over the predicted
    front from its most accurate point (:func:`spread_subset`)."""
    if F.shape[1] == 1:
        return [int(i) for i in np.argsort(F[:, 0], kind="stable")[:k]]
    return spread_subset(F, k, int(np.argmin(F[:, 0])))


def spread_subset(F: np.ndarray, k: int, first: int) -> list[int]:
    """Greedy max-min selection of ``k`` rows of ``F`` (normalised), starting from ``first``:
    candidates spread across the predicted front instead of clustering at one end."""
    n = len(F)
    if n <= k:
        return list(range(n))
    span = F.max(axis=0) - F.min(axis=0)
    span[span == 0] = 1.0
    Fn = (F - F.min(axis=0)) / span
    chosen = [first]
    dist = np.linalg.norm(Fn - Fn[first], axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(Fn - Fn[nxt], axis=1))
    return chosen
