"""Relaxation whose last dense Cholesky factor gives ln det' and the inertia
(hpcvib.landscape.exact_minimum), against independent routes: dense LAPACK eigenvalues of D, the sparse
factorisation of hpcvib.linalg.spectral (CHOLMOD/MUMPS), and Sylvester counts by eigvalsh."""

import numpy as np
import pytest
import scipy.linalg as sla
from mpi4py import MPI

from hpcvib.geometry.defects import DefectSpec, build_defect
from hpcvib.landscape.exact_minimum import (_negative_in_block_diagonal, count_negative_eigenvalues, factorise,
                                  newton_minimum, relax_exact, relax_to_minimum)
from hpcvib.geometry.structures import apply_isotropic_strain
from hpcvib.linalg.hessian import assemble_hessian
from hpcvib.linalg.spectral import log_pseudo_determinant
from hpcvib.potentials import load_potential

from conftest import fe_a0, serial_only

POT = load_potential("Fe_mm")


def _dense_ln_det_prime(atoms) -> tuple:
    """ln det'(D) and the number of negative eigenvalues from every eigenvalue of D (LAPACK)."""
    masses = np.repeat(atoms.get_masses(), 3)
    h = POT.hessian(atoms).toarray()
    d = h / np.sqrt(np.outer(masses, masses))
    w = np.linalg.eigvalsh(d)
    order = np.argsort(np.abs(w))
    nonzero = w[order[3:]]
    return float(np.log(np.abs(nonzero)).sum()), int((nonzero < 0).sum())


def _vacancy():
    return build_defect(DefectSpec("V", 1, "vacancy", 0, ((0, 0, 0),), 0), 4, fe_a0())


def _dumbbell(axis):
    return build_defect(DefectSpec("I", 1, "".join(map(str, axis)), 0, ((0, 0, 0) + axis,), 0), 4, fe_a0())


@serial_only()
def test_relaxed_vacancy_ln_det_matches_dense_eigenvalues():
    res = relax_exact(_vacancy(), POT, fmax=1e-6)
    assert res.n_negative == 0 and res.max_force < 1e-6
    ref, n_neg = _dense_ln_det_prime(res.atoms)
    assert n_neg == 0
    assert abs(res.ln_det_prime - ref) < 1e-9 * abs(ref)
    sparse = log_pseudo_determinant(assemble_hessian(MPI.COMM_SELF, res.atoms, POT))
    assert abs(res.ln_det_prime - sparse.ln_det_prime) < 1e-12 * abs(ref)


@serial_only()
def test_masses_enter_ln_det_prime_as_in_the_sparse_route():
    """Unequal masses (an isotope pattern): ln det'(D) from the factor of H_(-k) must equal
    the sparse factorisation of the mass-weighted D_(-k) (THEORY §3 bookkeeping)."""
    atoms = relax_exact(_vacancy(), POT).atoms
    masses = atoms.get_masses()
    masses[::3] *= 1.7
    masses[5] = 200.0  # the pinned (heaviest) atom is not atom 0
    atoms.set_masses(masses)
    fac = factorise(POT, atoms, int(np.argmax(masses)))
    from hpcvib.landscape.exact_minimum import ln_det_prime_from_hessian

    ours = ln_det_prime_from_hessian(fac.ln_det_h, masses, fac.pinned_atom)
    sparse = log_pseudo_determinant(assemble_hessian(MPI.COMM_SELF, atoms, POT))
    ref, _ = _dense_ln_det_prime(atoms)
    assert abs(ours - sparse.ln_det_prime) < 1e-11 * abs(ref)
    assert abs(ours - ref) < 1e-9 * abs(ref)


@serial_only()
def test_chord_from_a_neighbouring_strain_reaches_the_same_minimum():
    base = relax_exact(_vacancy(), POT, fmax=1e-7)
    start = apply_isotropic_strain(base.atoms, 0.02)
    chorded = newton_minimum(start, POT, fmax=1e-7, chord=base.factor)
    fresh = relax_exact(start, POT, fmax=1e-7)
    assert chorded.counts["factorisations"] == 1  # the final one only: every step reused the old factor
    assert np.abs(chorded.atoms.positions - fresh.atoms.positions).max() < 1e-6
    ref, _ = _dense_ln_det_prime(chorded.atoms)
    assert abs(chorded.ln_det_prime - ref) < 1e-9 * abs(ref)


def test_single_precision_chord_factor_gives_the_exact_minimum():
    """A single-precision factor (spotrf) only preconditions the chord steps: from it the
    strained copy reaches the minimum of a double-precision chord to 1e-6 Å, and its recorded
    factor and ln det' are double precision and equal to dense LAPACK's."""
    from hpcvib.landscape.exact_minimum import factorise

    base = relax_exact(_vacancy(), POT, fmax=1e-7)
    single = factorise(POT, base.atoms, base.pinned_atom, exact=False)
    assert single.factor.dtype == np.float32 and not single.exact
    assert np.abs(single.factor - base.factor.factor).max() < 1e-5 * np.abs(base.factor.factor).max()
    start = apply_isotropic_strain(base.atoms, 0.02)
    from_single = newton_minimum(start, POT, fmax=1e-7, chord=single)
    from_double = newton_minimum(start, POT, fmax=1e-7, chord=base.factor)
    assert np.abs(from_single.atoms.positions - from_double.atoms.positions).max() < 1e-6
    assert from_single.factor.exact and from_single.counts["factorisations"] == 1
    ref, _ = _dense_ln_det_prime(from_single.atoms)
    assert abs(from_single.ln_det_prime - ref) < 1e-9 * abs(ref)


def test_anderson_chord_is_gmres_fast_on_a_linear_problem():
    """F(x) = −A(x − x*) with a chord matrix B that differs from A by a rank-4 term: B⁻¹A has at
    most five distinct eigenvalues, so the accelerated steps (GMRES in disguise) reach the known
    x* to 1e-10 in seven steps, where plain chord steps are still more than 1e-3 away."""
    from hpcvib.landscape.exact_minimum import AndersonChord

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    a = q @ np.diag(rng.uniform(1.0, 5.0, 60)) @ q.T
    u = np.linalg.qr(rng.normal(size=(60, 4)))[0]
    b = a + a @ u @ np.diag([3.0, 2.0, 1.0, 0.5]) @ u.T @ a / 10  # B⁻¹A = identity + rank 4
    x_star = rng.normal(size=60)

    def run(accelerate, steps):
        x, mixer = np.zeros(60), AndersonChord(memory=6)
        for _ in range(steps):
            r = np.linalg.solve(b, -a @ (x - x_star))
            x = x + (mixer.step(x, r) if accelerate else r)
        return np.abs(x - x_star).max()
    assert run(True, 7) < 1e-10
    assert run(False, 7) > 1e-3


@serial_only()
def test_saddle_inertia_counted_like_eigvalsh():
    """A <111> dumbbell relaxed from its symmetric start stops on a saddle of Mendelev Fe: the
    LDLᵀ count equals the number of negative eigenvalues of D (dense)."""
    res = relax_exact(_dumbbell((1, 1, 1)), POT, fmax=1e-6)
    _, n_neg = _dense_ln_det_prime(res.atoms)
    assert n_neg > 0
    assert res.n_negative == n_neg and res.ln_det_prime is None
    assert count_negative_eigenvalues(POT, res.atoms, 0) == n_neg


@serial_only()
def test_saddle_escape_ends_at_a_minimum():
    res = relax_to_minimum(_dumbbell((1, 1, 1)), POT, fmax=1e-6, escape_seed=[1, 2])
    assert res.counts["escaped"] == 1 and res.n_negative == 0
    _, n_neg = _dense_ln_det_prime(res.atoms)
    assert n_neg == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_diagonal_negative_count(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(40, 40))
    a = a + a.T + np.diag(rng.normal(scale=3, size=40))
    _, d, _ = sla.ldl(a, lower=True)
    assert _negative_in_block_diagonal(d) == int((np.linalg.eigvalsh(a) < 0).sum())
