"""One shifted factor per saddle-search step (hpcvib.landscape.shifted), against dense LAPACK."""

import numpy as np
import pytest
import scipy.linalg as sla

from hpcvib.landscape import shifted
from hpcvib.potentials import load_potential

from conftest import fe_vacancy_neb


@pytest.fixture(scope="module")
def strained_cell():
    """D of a 53-atom Fe vacancy cell with its lowest vibrational eigenvalue moved to −0.02
    eV/(Å² amu) (D − (λ1 + 0.02) v1 v1ᵀ: a saddle-like spectrum, translations still exact null
    vectors)."""
    atoms = fe_vacancy_neb(3)["initial"].copy()
    atoms.positions += np.random.default_rng(3).normal(scale=0.01, size=atoms.positions.shape)
    d, sqrt_m = shifted.dynamical_matrix(load_potential("Fe_mm"), atoms)
    w, v = _vibrational_spectrum(d, shifted.translations(sqrt_m))
    return d - (w[0] + 0.02) * np.outer(v[:, 0], v[:, 0]), sqrt_m


def _vibrational_spectrum(d, t):
    """Eigenpairs of D without the three translations (dense LAPACK, reference)."""
    w, v = sla.eigh(d)
    keep = np.linalg.norm(t.T @ v, axis=0) < 0.5
    return w[keep], v[:, keep]


def test_dense_matrix_equals_the_sparse_hessian(strained_cell):
    neb = fe_vacancy_neb(3)
    pot = load_potential("Fe_mm")
    d, sqrt_m = shifted.dynamical_matrix(pot, neb["initial"])
    h = pot.hessian(neb["initial"]).toarray()
    assert np.allclose(d * np.outer(sqrt_m, sqrt_m), h, rtol=0, atol=1e-12)
    # exactly symmetric (the shifted factor reads its transpose), the lower triangle as assembled
    assert np.array_equal(d, d.T)
    lower = np.tril_indices_from(h)
    assert np.array_equal(d[lower], (h / sqrt_m[:, None] / sqrt_m[None, :])[lower])


@pytest.mark.parametrize("solver", ["lowest_pairs", "lowest_pairs_lobpcg"])
def test_lowest_pairs_match_lapack_and_the_shift_moves_below_the_spectrum(strained_cell, solver):
    """Shift-invert Lanczos (default) and the LOBPCG fallback: the two lowest vibrational pairs of
    dense LAPACK eigh, translations excluded; warm-started from the first mode, the same."""
    d, sqrt_m = strained_cell
    t = shifted.translations(sqrt_m)
    w_ref, v_ref = _vibrational_spectrum(d, t)
    assert w_ref[0] < 0  # the test point has an unstable mode
    op = shifted.factor_below_spectrum(d, t, -1e-6)  # first shift above λ1: must be moved down
    assert op.sigma < w_ref[0]
    for start in (None, v_ref[:, 0]):
        w, v = getattr(shifted, solver)(op, 2, start=start, tol=1e-10)
        assert abs(w[0] - w_ref[0]) < 1e-9 * abs(w_ref[0])
        # a positive second pair is only needed to SECOND_PAIR_TOL (the block method gives more)
        second = shifted.SECOND_PAIR_TOL if solver == "lowest_pairs" else 1e-9 * w_ref[1]
        assert abs(w[1] - w_ref[1]) < second
        assert abs(abs(v[:, 0] @ v_ref[:, 0]) - 1) < 1e-9
        assert np.abs(t.T @ v).max() < 1e-10


def test_a_negative_second_pair_is_solved_tightly(strained_cell):
    """Two unstable modes (the second made negative by lowering its eigenvalue to −0.01): both
    pairs to the tolerance, since a negative second mode may be the one followed."""
    d, sqrt_m = strained_cell
    t = shifted.translations(sqrt_m)
    w_ref, v_ref = _vibrational_spectrum(d, t)
    d2 = d - (w_ref[1] + 0.01) * np.outer(v_ref[:, 1], v_ref[:, 1])
    w_ref2, v_ref2 = _vibrational_spectrum(d2, t)
    assert w_ref2[1] < 0
    op = shifted.factor_below_spectrum(d2, t, 2.0 * w_ref2[0])
    w, v = shifted.lowest_pairs(op, 2, start=v_ref2[:, 0], tol=1e-10)
    assert np.allclose(w, w_ref2[:2], rtol=1e-9, atol=1e-12)
    assert np.abs(np.abs(np.einsum("ij,ij->j", v, v_ref2[:, :2])) - 1).max() < 1e-9


def test_complement_newton_is_the_projected_newton_step(strained_cell):
    d, sqrt_m = strained_cell
    t = shifted.translations(sqrt_m)
    w_ref, v_ref = _vibrational_spectrum(d, t)
    op = shifted.factor_below_spectrum(d, t, 1.5 * w_ref[0])
    v = v_ref[:, 0]
    g = np.random.default_rng(5).normal(size=d.shape[0])
    s = shifted.complement_newton(op, g, v)
    # reference: D restricted to the orthogonal complement of v and the translations
    q = sla.null_space(np.column_stack([v, t]).T)
    s_ref = q @ np.linalg.solve(q.T @ d @ q, -q.T @ g)
    assert w_ref[1] > 0 and s is not None
    assert np.allclose(s, s_ref, rtol=0, atol=1e-8 * np.abs(s_ref).max())


def test_rfo_step_climbs_the_mode_and_descends_across(strained_cell):
    d, sqrt_m = strained_cell
    t = shifted.translations(sqrt_m)
    w_ref, v_ref = _vibrational_spectrum(d, t)
    op = shifted.factor_below_spectrum(d, t, 1.5 * w_ref[0])
    g = op.project(np.random.default_rng(7).normal(size=d.shape[0]))
    for lam in (w_ref[0], abs(w_ref[0])):  # uphill along v whatever the sign of its curvature
        s = shifted.partitioned_rfo_step(op, g, v_ref[:, 0], lam, newton=False)
        assert (v_ref[:, 0] @ s) * (v_ref[:, 0] @ g) > 0
    s = shifted.partitioned_rfo_step(op, g, v_ref[:, 0], w_ref[0], newton=True)
    across = op.project(s, v_ref[:, 0])
    assert across @ op.project(g, v_ref[:, 0]) < 0  # energy goes down across the mode
    # a vanishing gradient along v gives Newton's −g_v/λ
    g_small = op.project(g, v_ref[:, 0]) + 1e-9 * v_ref[:, 0]
    s = shifted.partitioned_rfo_step(op, g_small, v_ref[:, 0], w_ref[0], newton=True)
    assert np.isclose(v_ref[:, 0] @ s, -1e-9 / w_ref[0], rtol=1e-6)
