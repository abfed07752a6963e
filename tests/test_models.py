"""Surrogate models: weight recovery on known laws, EQML vs linear, predictive std against an
independent dense posterior, learning-curve determinism and rank independence, persistence."""

import numpy as np
import pytest
from mpi4py import MPI

from hpcvib.errors import InputError
from hpcvib.learning.models import (BayesianLinearModel, EQMLModel, SavedModel, entropy_features, learning_curve,
                           quadratic_features, rmse)


def _synthetic(n=240, k=5, seed=0):
    """Per-configuration sums of per-atom 'descriptors' (as in Eq. 16): D = Σ d_i, DD = Σ d_i d_iᵀ."""
    rng = np.random.default_rng(seed)
    per_atom = rng.normal(size=(n, 6, k))
    return per_atom.sum(axis=1), np.einsum("nai,naj->nij", per_atom, per_atom)


def test_quadratic_features_give_the_trace():
    rng = np.random.default_rng(1)
    D, DD = _synthetic(n=4, k=4)
    W = rng.normal(size=(4, 4))
    W = W + W.T
    iu = np.triu_indices(4)
    assert np.allclose(quadratic_features(DD) @ W[iu], np.einsum("ij,nij->n", W, DD), rtol=1e-12)
    assert quadratic_features(np.zeros((1, 35, 35))).shape == (1, 630)


def test_linear_weights_recovered_exactly():
    D, _ = _synthetic()
    w = np.array([0.3, -1.2, 0.05, 2.0, -0.7])
    model = BayesianLinearModel().fit(D, D @ w)
    assert np.allclose(model.coef_, w, rtol=1e-6, atol=1e-8)


def test_eqml_weights_recovered_and_beat_linear_on_quadratic_truth():
    D, DD = _synthetic(n=400)
    rng = np.random.default_rng(2)
    w = rng.normal(size=5)
    W = rng.normal(size=(5, 5)) * 0.05
    W = W + W.T
    y = D @ w + np.einsum("ij,nij->n", W, DD)
    X = entropy_features(D, DD)
    train, test = slice(0, 300), slice(300, None)
    eq = EQMLModel().fit(X[train], y[train])
    lin = BayesianLinearModel().fit(D[train], y[train])
    assert rmse(y[test], eq.predict(X[test])) < 1e-6 * np.std(y)
    assert rmse(y[test], lin.predict(D[test])) > 100 * rmse(y[test], eq.predict(X[test]))
    iu = np.triu_indices(5)
    assert np.allclose(eq.coef_, np.concatenate([w, W[iu]]), rtol=1e-5, atol=1e-7)


def test_eqml_matches_linear_on_linear_truth():
    D, DD = _synthetic(n=300, seed=4)
    rng = np.random.default_rng(5)
    y = D @ rng.normal(size=5) + 0.01 * rng.normal(size=300)
    X = entropy_features(D, DD)
    train, test = slice(0, 200), slice(200, None)
    e_eq = rmse(y[test], EQMLModel().fit(X[train], y[train]).predict(X[test]))
    e_lin = rmse(y[test], BayesianLinearModel().fit(D[train], y[train]).predict(D[test]))
    assert e_eq < 1.1 * e_lin


@pytest.mark.parametrize("intercept", [False, True])
def test_predictive_std_against_dense_posterior(intercept):
    """σ²(x) = 1/α + x̃ᵀ Σ x̃ from the Gaussian posterior written out densely on [1, x] with a flat
    prior on the intercept (independent of the model's centring algebra)."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(80, 4)) + 3.0
    y = X @ np.array([1.0, -2.0, 0.5, 0.1]) + 4.0 + 0.3 * rng.normal(size=80)
    m = BayesianLinearModel(fit_intercept=intercept, scale=False).fit(X, y)
    A = np.hstack([np.ones((80, 1)), X]) if intercept else X
    prior = np.diag(([0.0] if intercept else []) + [m.lambda_] * 4)
    S = np.linalg.inv(m.alpha_ * A.T @ A + prior)
    mean = S @ (m.alpha_ * A.T @ y)
    Xt = rng.normal(size=(7, 4)) + 3.0
    At = np.hstack([np.ones((7, 1)), Xt]) if intercept else Xt
    var = 1.0 / m.alpha_ + np.einsum("ij,jk,ik->i", At, S, At)
    pred, std = m.predict(Xt, return_std=True)
    assert np.allclose(pred, At @ mean, rtol=1e-9)
    assert np.allclose(std, np.sqrt(var), rtol=1e-9)


def test_sklearn_compatible():
    from sklearn.model_selection import cross_val_score

    D, _ = _synthetic(n=60)
    scores = cross_val_score(BayesianLinearModel(), D, D @ np.arange(5.0), cv=3, scoring="r2")
    assert np.all(scores > 0.999)
    assert BayesianLinearModel(fit_intercept=True).get_params()["fit_intercept"] is True


def test_learning_curve_deterministic_and_rank_independent():
    D, _ = _synthetic(n=60, seed=7)
    y = D @ np.ones(5) + 0.1 * np.random.default_rng(8).normal(size=60)
    world = learning_curve(MPI.COMM_WORLD, BayesianLinearModel, D, y, (0.2, 0.5), n_splits=6, seed=3)
    alone = learning_curve(MPI.COMM_SELF, BayesianLinearModel, D, y, (0.2, 0.5), n_splits=6, seed=3)
    again = learning_curve(MPI.COMM_SELF, BayesianLinearModel, D, y, (0.2, 0.5), n_splits=6, seed=3)
    other = learning_curve(MPI.COMM_SELF, BayesianLinearModel, D, y, (0.2, 0.5), n_splits=6, seed=4)
    assert world == alone == again
    assert other != alone
    assert world[0]["test_rmse"] > world[0]["train_rmse"] > 0


def test_save_load_round_trip_and_settings_check(tmp_path):
    D, DD = _synthetic(n=50)
    X = entropy_features(D, DD)
    model = EQMLModel().fit(X, D @ np.ones(5))
    settings = {"jmax": 4.0, "rcut": 5.0, "full": False, "rfac0": 0.99363, "weights": {}}
    path = str(tmp_path / f"m{MPI.COMM_WORLD.rank}.json")
    SavedModel(model, "S_f", "eqml", settings, "Fe_mm", "abc").save(path)
    back = SavedModel.load(path)
    assert np.array_equal(back.model.predict(X), model.predict(X))
    assert np.array_equal(back.model.predict(X, return_std=True)[1], model.predict(X, return_std=True)[1])
    back.check_compatible(settings, "abc", path)
    with pytest.raises(InputError, match="rcut"):
        back.check_compatible(dict(settings, rcut=4.0), "abc", path)
    with pytest.raises(InputError, match="potential"):
        back.check_compatible(settings, "other", path)


@pytest.mark.parametrize("n,p,intercept", [(200, 12, False), (50, 80, False), (300, 20, True)])
def test_evidence_maximisation_reproduces_scikit_learn(n, p, intercept):
    """Our eigenbasis evidence maximisation against scikit-learn's BayesianRidge (SVD route)."""
    from sklearn.linear_model import BayesianRidge

    rng = np.random.default_rng(n + p)
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 3, size=p)
    y = X @ rng.normal(size=p) + 0.3 * np.sin(X[:, 0]) + 2.0
    ours = BayesianLinearModel(fit_intercept=intercept, scale=False).fit(X, y)
    ref = BayesianRidge(fit_intercept=intercept, tol=1e-6, max_iter=300).fit(X, y)
    assert np.isclose(ours.alpha_, ref.alpha_, rtol=1e-6) and np.isclose(ours.lambda_, ref.lambda_, rtol=1e-6)
    assert np.allclose(ours.coef_, ref.coef_, rtol=1e-6, atol=1e-9)
    assert np.allclose(ours.predict(X), ref.predict(X), rtol=1e-7, atol=1e-8)


def _two_strain_classes(n=120, k=5):
    """Rows at ε = 0 and ε = 0.02 with different exact linear laws; last column the strain."""
    D, _ = _synthetic(n=2 * n, k=k, seed=5)
    w0, w2 = np.arange(1.0, k + 1), -0.5 * np.arange(1.0, k + 1) + 0.3
    strain = np.repeat([0.0, 0.02], n)
    y = np.where(strain == 0.0, D @ w0, D @ w2)
    return np.hstack([D, strain[:, None]]), y, w0, w2


def test_per_strain_model_is_one_independent_model_per_class_and_interpolates():
    """Independent route: each class's model is the plain Bayesian ridge fitted to that class
    alone; between classes the prediction is the linear interpolation of the two in ε."""
    from hpcvib.learning.models import StrainClassModel, make_model

    X, y, w0, w2 = _two_strain_classes()
    model = make_model("linear", "S_f", per_strain=True, volume_per_atom0=11.64).fit(X, y)
    assert isinstance(model, StrainClassModel) and np.allclose(model.strains_, [0.0, 0.02])
    alone0 = BayesianLinearModel().fit(X[:120, :-1], y[:120])
    alone2 = BayesianLinearModel().fit(X[120:, :-1], y[120:])
    assert np.allclose(model.coef_at(0.0), w0, rtol=1e-6) and np.allclose(model.coef_at(0.02), w2, rtol=1e-6)
    x = X[:3, :-1]
    mid = np.hstack([x, np.full((3, 1), 0.005)])  # a quarter of the way from 0 to 2 %
    m, s = model.predict(mid, return_std=True)
    m0, s0 = alone0.predict(x, return_std=True)
    m2, s2 = alone2.predict(x, return_std=True)
    assert np.allclose(m, 0.75 * m0 + 0.25 * m2, rtol=1e-12) and np.allclose(s, 0.75 * s0 + 0.25 * s2, rtol=1e-12)
    assert rmse(y, model.predict(X)) < 1e-6 * np.abs(y).max()
    assert np.allclose(model.predict(np.hstack([x, np.full((3, 1), 0.03)])), m2, rtol=1e-12)  # clamped
    model.check_strain(0.0215, "cell.xyz")
    with pytest.raises(InputError, match="cell.xyz: strain \\+3.000 % is outside the model's strain classes"):
        model.check_strain(0.03, "cell.xyz")
    with pytest.raises(InputError, match="volume per atom"):
        make_model("linear", "S_f", per_strain=True)


def test_per_strain_model_round_trip(tmp_path):
    from hpcvib.learning.models import make_model

    X, y, _, _ = _two_strain_classes(n=60)
    model = make_model("eqml", "S_f", per_strain=True, volume_per_atom0=11.64)
    D = X[:, :-1]
    DD = np.einsum("ni,nj->nij", D, D)
    XE = np.hstack([entropy_features(D, DD), X[:, -1:]])
    model.fit(XE, y + 0.1 * D[:, 0] ** 2)
    path = str(tmp_path / f"s{MPI.COMM_WORLD.rank}.json.gz")
    SavedModel(model, "S_f", "eqml", {}, "Fe_mm", "abc").save(path)
    back = SavedModel.load(path).model
    assert back.volume_per_atom0 == 11.64
    assert np.array_equal(back.predict(XE, return_std=True)[1], model.predict(XE, return_std=True)[1])
    assert back.effective_parameters_ == model.effective_parameters_


def test_host_strain_of_a_strained_bcc_cell_is_the_strain_it_was_built_with():
    """Analytic: a cell built with a = a0 (1 + ε) has Ω = a³/2, so (Ω/Ω0)^(1/3) − 1 = ε."""
    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.learning.models import StrainClassModel
    from hpcvib.learning.prediction import host_strain

    a0 = 2.8553
    model = StrainClassModel(volume_per_atom0=a0 ** 3 / 2)
    for eps in (-0.01, 0.0, 0.013, 0.03):
        assert abs(host_strain(model, bcc_supercell(3, a0, "Fe", strain=eps)) - eps) < 1e-12
    assert host_strain(BayesianLinearModel(), bcc_supercell(3, a0, "Fe")) is None
