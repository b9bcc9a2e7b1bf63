"""The latency model of measure profiles: fit, error estimate, features."""

from __future__ import annotations

import numpy as np
import pytest

from natv2.errors import Natv2Error
from natv2.profiling.cost import subnet_cost
from natv2.profiling.latency_model import (
    FEATURES,
    MIN_SAMPLES,
    LatencyModel,
    fit_from_records,
    latency_features,
)
from natv2.space import SearchSpace
from natv2.supernet.config import config_for_encoding


def _archs(n: int, seed: int):
    space = SearchSpace("exits+parallel", widths=(1.0,))
    cfg = config_for_encoding("exits+parallel", preset="tiny", width=1.0, num_classes=10)
    archs = [space.decode(v) for v in space.sample(n, np.random.default_rng(seed))]
    return [(a, subnet_cost(a, cfg).macs) for a in archs]


def test_the_model_recovers_a_linear_latency_and_measures_its_own_error():
    true = np.array([0.05, 0.04, 0.006, 0.002, 0.003])  # ms: base, per MMAC, per op kind
    rng = np.random.default_rng(0)
    records = []
    for arch, macs in _archs(40, 1):
        ms = float(latency_features(arch, macs) @ true) * (1 + 0.02 * rng.standard_normal())
        records.append((arch, macs, ms))
    model = fit_from_records(records)
    assert model is not None and model.samples == 40 and len(model.coef) == len(FEATURES)
    assert np.allclose(model.coef, true, rtol=0.25, atol=2e-3)
    assert 0 < model.loo_mape < 0.05  # the 2 % noise, not more
    arch, macs = _archs(1, 99)[0]
    want = float(latency_features(arch, macs) @ true)
    assert model.predict(latency_features(arch, macs)) == pytest.approx(want, rel=0.1)
    assert model.to_dict()["samples"] == 40


def test_more_work_never_predicts_less_time():
    rng = np.random.default_rng(3)
    archs = _archs(30, 4)
    records = [(a, m, float(rng.uniform(0.05, 0.5))) for a, m in archs]  # pure noise
    model = fit_from_records(records)
    assert model is not None and min(model.coef) >= 0.0
    base = latency_features(*archs[0])
    more = base + np.array([0.0, 1.0, 1.0, 1.0, 1.0])
    assert model.predict(more) >= model.predict(base)


def test_features_count_what_runs():
    space = SearchSpace("exits+parallel", widths=(1.0,))
    minimal, maximal = space.minimal(), space.maximal()
    f_min = latency_features(minimal, 1_000_000)
    f_max = latency_features(maximal, 2_000_000)
    assert f_min[0] == f_max[0] == 1.0 and f_min[1] == 1.0 and f_max[1] == 2.0
    assert f_max[2] == 20 and f_max[3] == 40  # every level: IRB + pointwise + transform
    assert f_min[2] + f_min[3] <= 2 and f_max[4] > f_min[4]  # exit 1: stage 1's levels only


def test_too_few_measurements_give_no_model_and_a_clear_error():
    records = [(a, m, 0.1) for a, m in _archs(MIN_SAMPLES - 1, 5)]
    assert fit_from_records(records) is None
    with pytest.raises(Natv2Error, match="at least"):
        LatencyModel.fit([latency_features(a, m) for a, m, _ in records], [0.1] * len(records))
