"""Compensation-law statistics against direct numpy and the vector definition of Eq. 34."""

import numpy as np

from hpcvib.physics.compensation import direct_fit, marginal_law, mean_kappa, pearson_r


def test_pearson_and_direct_fit_against_numpy():
    rng = np.random.default_rng(0)
    de = rng.uniform(0, 5, 500)
    ln_nu = 1.3 * de - 0.4 + rng.normal(size=500)
    assert np.isclose(pearson_r(ln_nu, de), np.corrcoef(ln_nu, de)[0, 1], rtol=1e-12)
    g, c = np.polyfit(de, ln_nu, 1)
    fit = direct_fit(ln_nu, de)
    assert np.isclose(fit["gamma_per_eV"], g, rtol=1e-10) and np.isclose(fit["ln_nu_gamma"], c, rtol=1e-10)


def test_marginal_law_bins_against_loop():
    rng = np.random.default_rng(1)
    de = rng.uniform(0.2, 6.0, 3000)
    ln_nu = 0.8 * de + rng.normal(size=3000) * (0.2 + 0.1 * de)
    m = marginal_law(ln_nu, de, n_bins=50)
    edges = np.linspace(de.min(), de.max(), 51)
    for b in range(50):
        sel = (de >= edges[b]) & ((de < edges[b + 1]) if b < 49 else (de <= edges[b + 1]))
        assert m["counts"][b] == sel.sum()
        assert np.isclose(m["mean"][b], ln_nu[sel].mean(), rtol=1e-12)
        assert np.isclose(m["variance"][b], ln_nu[sel].var(ddof=1), rtol=1e-10)
    assert m["counts"].sum() == 3000
    assert abs(m["gamma_star_per_eV"] - 0.8) < 0.1


def test_kappa_vanishes_on_exact_compensation_law():
    rng = np.random.default_rng(2)
    de = rng.uniform(0.1, 4.0, 700)
    gamma, c = 1.7, -0.9
    k = mean_kappa(gamma * de + c, de, delta_e0=-c / gamma, block=128)
    assert k["mean_kappa_all_pairs"] < 1e-12


def test_kappa_against_vector_definition():
    """Eq. 34 written with descriptor vectors and weights, summed over the dense M×M array."""
    rng = np.random.default_rng(3)
    m, p = 120, 6
    X = rng.normal(size=(m, p)) + 2.0
    w = rng.normal(size=p)
    de = rng.uniform(0.5, 3.0, m)
    e0 = -0.3
    ratio = (de[:, None] - e0) / (de[None, :] - e0)
    Dij = X[:, None, :] - ratio[:, :, None] * X[None, :, :]
    dense = np.abs(Dij @ w) / np.abs((X[:, None, :] + X[None, :, :]) @ w)
    k = mean_kappa(X @ w, de, e0, block=37)
    assert np.isclose(k["mean_kappa_all_pairs"], dense.mean(), rtol=1e-10)
    off = dense[~np.eye(m, dtype=bool)].mean()
    assert np.isclose(k["mean_kappa_distinct_pairs"], off, rtol=1e-10)
