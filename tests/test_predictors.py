"""Accuracy predictors: registry, features, the ten-fold LightGBM ensemble, CV, the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from natv2.errors import Natv2Error
from natv2.predictors import (
    PREDICTORS,
    CVResult,
    EnsemblePredictor,
    FeatureEncoder,
    available_predictors,
    cross_validate,
    make_predictor,
    synthetic_accuracy,
)
from natv2.space import ENCODINGS, SearchSpace

SPACE = SearchSpace("exits+parallel")


@pytest.fixture(scope="module")
def data():
    """400 NATv2-sampled subnets with a structured synthetic accuracy (+ noise 0.01)."""
    X = SPACE.sample(400, np.random.default_rng(0))
    y = synthetic_accuracy(SPACE, X, noise=0.01, seed=0)
    return X, y


def test_registry_names():
    expected = {
        "lgbm",
        "gp",
        "rbf",
        "rbf_ensemble",
        "mlp",
        "cart",
        "svr",
        "ridge",
        "knn",
        "bayesian_ridge",
        "e2epp",
        "catboost",
    }
    assert set(PREDICTORS) == expected
    assert set(available_predictors()) >= expected - {"catboost"}


@pytest.mark.parametrize("name", available_predictors())
def test_every_predictor_fits_and_predicts(name, data):
    X, y = data
    pred = make_predictor(name, seed=0)
    assert pred.fit(X[:120], y[:120]) is pred
    out = pred.predict(X[300:330])
    assert isinstance(out, np.ndarray) and out.shape == (30,)
    assert np.all(np.isfinite(out))
    assert pred.predict(X[300]).shape == (1,)  # a single vector is a population of one


def test_lgbm_default_ranks_held_out_subnets(data):
    X, y = data
    pred = make_predictor()  # lgbm, integer features
    assert pred.name == "lgbm" and pred.features == "integer"
    pred.fit(X[:300], y[:300])
    rho = spearmanr(y[300:], pred.predict(X[300:]))[0]
    assert rho > 0.8


def test_lgbm_is_a_ten_fold_ensemble_whose_prediction_is_the_mean(data):
    X, y = data
    pred = make_predictor("lgbm", seed=1).fit(X[:300], y[:300])
    assert isinstance(pred, EnsemblePredictor)
    assert len(pred.fold_models) == 10
    assert len({id(m) for m in pred.fold_models}) == 10
    per_fold = pred.predict_folds(X[300:])
    assert per_fold.shape == (10, 100)
    np.testing.assert_allclose(pred.predict(X[300:]), per_fold.mean(axis=0), rtol=0, atol=1e-12)
    # ... and straight from the raw LightGBM models (they see standardised targets).
    F = FeatureEncoder(SPACE, "integer").transform(X[300:])
    raw = np.mean([m.predict(F) for m in pred.fold_models], axis=0)
    np.testing.assert_allclose(
        pred.predict(X[300:]), raw * pred.y_scale_ + pred.y_mean_, rtol=0, atol=1e-12
    )
    # the fold models differ (each missed a different tenth), and every sample has an
    # out-of-fold prediction
    assert np.ptp(per_fold, axis=0).max() > 0
    assert pred.oof_predictions is not None and pred.oof_predictions.shape == (300,)


@pytest.mark.parametrize("name", ["lgbm", "e2epp", "mlp", "rbf_ensemble", "gp"])
def test_same_seed_same_predictions(name, data):
    X, y = data
    a = make_predictor(name, seed=3).fit(X[:100], y[:100]).predict(X[300:])
    b = make_predictor(name, seed=3).fit(X[:100], y[:100]).predict(X[300:])
    np.testing.assert_array_equal(a, b)


def test_lgbm_seed_changes_the_folds(data):
    X, y = data
    a = make_predictor("lgbm", seed=0).fit(X[:100], y[:100]).predict(X[300:])
    b = make_predictor("lgbm", seed=1).fit(X[:100], y[:100]).predict(X[300:])
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_onehot_width_and_layout(encoding):
    space = SearchSpace(encoding)
    enc = FeatureEncoder(space, "onehot")
    assert enc.n_features == int((space.upper - space.lower + 1).sum())
    assert len(enc.feature_names()) == enc.n_features
    X = space.sample(20, np.random.default_rng(1))
    F = enc.transform(X)
    assert F.shape == (20, enc.n_features)
    np.testing.assert_array_equal(F.sum(axis=1), space.length)  # one 1 per gene
    names = np.asarray(enc.feature_names())
    for row, vec in zip(F, X, strict=True):
        hot = names[row == 1].tolist()
        assert hot == [f"{g}={v}" for g, v in zip(space.gene_names(), vec, strict=True)]
    np.testing.assert_array_equal(FeatureEncoder(space, "integer").transform(X), X)


def test_exits_parallel_onehot_has_1282_columns():
    # R 5 + W 2 + X 5 + ten mandatory levels x 63 + ten skippable levels x 64
    assert FeatureEncoder(SPACE, "onehot").n_features == 1282


@pytest.mark.parametrize("name", ["lgbm", "ridge", "knn"])
def test_onehot_predictors_work(name, data):
    X, y = data
    out = make_predictor(name, features="onehot", space=SPACE).fit(X[:80], y[:80]).predict(X[300:])
    assert out.shape == (100,) and np.all(np.isfinite(out))


def test_bad_inputs_raise_natv2_error(data):
    X, y = data
    with pytest.raises(Natv2Error, match="unknown predictor 'xgb'"):
        make_predictor("xgb")
    with pytest.raises(Natv2Error, match="unknown features"):
        make_predictor("lgbm", features="binary")
    with pytest.raises(Natv2Error, match="no hyper-parameter"):
        make_predictor("lgbm", depth=3)
    with pytest.raises(Natv2Error, match="not fitted"):
        make_predictor("ridge").predict(X[:3])
    with pytest.raises(Natv2Error, match="accuracies"):
        make_predictor("ridge").fit(X[:10], y[:9])
    pred = make_predictor("ridge", space=SPACE).fit(X[:50], y[:50])
    with pytest.raises(Natv2Error, match="23 genes"):
        pred.predict(X[:3, :-1])
    bad = X[:3].copy()
    bad[1, 0] = 9
    with pytest.raises(Natv2Error, match=r"position 1 \(R\) is 9"):
        pred.predict(bad)


def test_missing_catboost_names_the_extra():
    missing = dataclasses.replace(PREDICTORS["catboost"], requires="natv2_no_such_module")
    assert not missing.available
    with pytest.raises(Natv2Error, match=r"natv2\[catboost\]"):
        missing(seed=0)


def test_cross_validate_returns_sane_numbers(data):
    X, y = data
    res = cross_validate("ridge", X[:100], y[:100], folds=10, seed=0)
    assert isinstance(res, CVResult)
    assert 0.5 < res.spearman_rho <= 1 and 0.3 < res.kendall_tau <= 1
    assert res.kendall_tau < res.spearman_rho
    assert 0 < res.rmse < np.std(y[:100])
    assert res.fit_seconds >= 0
    again = cross_validate("ridge", X[:100], y[:100], folds=10, seed=0)
    assert (again.spearman_rho, again.kendall_tau, again.rmse) == (
        res.spearman_rho,
        res.kendall_tau,
        res.rmse,
    )
    lgbm = cross_validate("lgbm", X[:60], y[:60], folds=3, seed=0)
    assert lgbm.spearman_rho > 0.6 and lgbm.fit_seconds > 0
    with pytest.raises(Natv2Error, match="at least 10 samples"):
        cross_validate("ridge", X[:5], y[:5], folds=10)


# --- CLI ------------------------------------------------------------------------------------


def _run_dir(tmp_path, n: int):
    run = tmp_path / f"run{n}"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"encoding": SPACE.encoding}))
    X = SPACE.sample(n, np.random.default_rng(5))
    y = synthetic_accuracy(SPACE, X, seed=5)
    lines = [
        json.dumps(
            {
                "id": SPACE.decode(v).id,
                "encoding": SPACE.encoding,
                "vector": [int(g) for g in v],
                "accuracy": float(a),
            }
        )
        for v, a in zip(X, y, strict=True)
    ]
    (run / "archive.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_cli_compare_prints_every_predictor(cli, tmp_path):
    run = _run_dir(tmp_path, 40)
    res = cli("predictors", "compare", run, "--folds", "3")
    assert res.code == 0, res.err
    table = [line.split() for line in res.out.splitlines()]
    header = next(i for i, t in enumerate(table) if t[:2] == ["predictor", "rho"])
    rows = {t[0]: t for t in table[header + 1 :] if t and t[0] in PREDICTORS}
    assert set(rows) == set(available_predictors())
    rhos = [float(t[1]) for t in table[header + 1 :] if t and t[0] in PREDICTORS]
    assert rhos == sorted(rhos, reverse=True)
    assert all(-1 <= r <= 1 for r in rhos)


def test_cli_compare_json_is_one_document(cli, tmp_path):
    run = _run_dir(tmp_path, 40)
    res = cli(
        "predictors", "compare", run, "--predictors", "ridge,cart", "--features", "onehot", "--json"
    )
    assert res.code == 0, res.err
    doc = res.json()
    assert doc["n_records"] == 40 and doc["folds"] == 10 and doc["features"] == "onehot"
    assert doc["encoding"] == "exits+parallel"
    names = [r["predictor"] for r in doc["results"]]
    assert sorted(names) == ["cart", "ridge"]
    rhos = [r["spearman_rho"] for r in doc["results"]]
    assert rhos == sorted(rhos, reverse=True)
    for r in doc["results"]:
        assert set(r) == {"predictor", "spearman_rho", "kendall_tau", "rmse", "fit_seconds"}


def test_cli_compare_bad_input_exits_2(cli, tmp_path):
    few = _run_dir(tmp_path, 6)
    for args, needle in [
        ((few,), "needs at least 10"),
        ((few, "--folds", "3", "--predictors", "lgbm,xgb"), "unknown predictor 'xgb'"),
        ((few, "--folds", "3", "--features", "binary"), "unknown features"),
        ((tmp_path / "nowhere",), "not a natv2 run directory"),
    ]:
        res = cli("predictors", "compare", *args)
        assert res.code == 2, (args, res.out, res.err)
        assert needle in res.err
        assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1


def test_decoded_features_spell_out_branches_expand_kernel_and_depth():
    space = SearchSpace("exits+parallel")
    enc = FeatureEncoder(space, "decoded")
    maximal = space.encode(space.maximal())
    minimal = space.encode(space.minimal())
    F = enc.transform(np.stack([maximal, minimal]))
    assert F.shape == (2, enc.n_features) and len(enc.feature_names()) == enc.n_features
    col = {name: i for i, name in enumerate(enc.feature_names())}
    big, small = F
    assert big[col["L1.irb"]] == 1 and big[col["L1.pw"]] == 1 and big[col["L1.tr"]] == 1
    assert big[col["L1.expand"]] == 6 and big[col["L1.kernel"]] == 7
    assert small[col["L1.irb"]] == 0 and small[col["L1.tr"]] == 1 and small[col["L1.expand"]] == 0
    assert big[col["levels"]] == 20 and small[col["levels"]] == 2  # minimal: exit 1, depth 2
    assert small[col["L5.active"]] == 0  # stage 2 is after the minimal subnet's exit
    assert [big[col[f"depth{s}"]] for s in range(1, 6)] == [4] * 5
    assert np.all((enc.lo <= F) & (enc.hi >= F))
    # a level whose branch mask alone changes moves branch columns, not expand or kernel
    v = maximal.copy()
    v[space.level_offset] = 1 + (1 - 1) * 9 + 8  # IRB only, E6 K7
    G = enc.transform(v[None, :])[0]
    assert G[col["L1.pw"]] == 0 and G[col["L1.expand"]] == 6 and G[col["L1.kernel"]] == 7


def test_decoded_features_count_branch_only_levels_by_kind_and_longest_run():
    space = SearchSpace("exits+parallel")
    enc = FeatureEncoder(space, "decoded")
    col = {name: i for i, name in enumerate(enc.feature_names())}

    def with_masks(masks: list[int]) -> np.ndarray:
        """The maximal subnet with stage 1's four levels given these branch masks (E6 K7)."""
        v = space.encode(space.maximal()).copy()
        for i, mask in enumerate(masks):
            v[space.level_offset + i] = 1 + (mask - 1) * 9 + 8
        return space.canonical_batch(v[None, :])[0]

    run_of_four, broken_run = enc.transform(
        np.stack([with_masks([2, 4, 6, 2]), with_masks([2, 7, 4, 6])])
    )
    assert run_of_four[col["pw_only_levels"]] == 2
    assert run_of_four[col["tr_only_levels"]] == 1
    assert run_of_four[col["pw_tr_levels"]] == 1
    assert run_of_four[col["branch_only_levels"]] == 4
    assert run_of_four[col["branch_only_run"]] == 4  # four in a row, no IRB between them
    assert broken_run[col["branch_only_levels"]] == 3
    assert broken_run[col["branch_only_run"]] == 2  # the IRB of level 2 breaks the run
    maximal = enc.transform(space.encode(space.maximal())[None, :])[0]
    assert maximal[col["branch_only_run"]] == 0 and maximal[col["pw_tr_levels"]] == 0
    assert np.all((enc.lo <= run_of_four) & (enc.hi >= run_of_four))


def test_search_ranks_with_decoded_features():
    from natv2.predictors import SEARCH_FEATURES

    rng = np.random.default_rng(0)
    space = SearchSpace("exits+parallel")
    X = space.sample(120, rng)
    y = synthetic_accuracy(space, X, noise=0.0, seed=0)
    pred = make_predictor("lgbm", features=SEARCH_FEATURES, space=space).fit(X[:100], y[:100])
    assert pred.features == "decoded"
    rho = spearmanr(pred.predict(X[100:]), y[100:]).statistic
    assert rho > 0.5  # it ranks unseen subnets, not only fits the archive
