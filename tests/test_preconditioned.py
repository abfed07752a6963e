"""Factorisation-free solvers (hpcvib.linalg.preconditioned): the lowest eigenpairs of D by
ICC-preconditioned Davidson against dense LAPACK (minima, a degenerate spectrum, an indefinite
matrix), the preconditioned-CG Newton step against a dense pseudo-inverse solve, and the route
choice by the memory the factorisation would need. Runs serially and on 2 ranks."""

import numpy as np
import pytest
from conftest import fe_a0, relaxed_fe_vacancy, serial_only
from test_spectral_thermo import dense_D

from hpcvib.geometry.structures import bcc_supercell
from hpcvib.linalg.hessian import assemble_hessian
from hpcvib.linalg.preconditioned import (choose_mode_route, preconditioned_lowest_modes,
                                          preconditioned_newton_step, translation_vectors)
from hpcvib.potentials import load_potential


def _check_against_dense(comm, atoms, k, atol=1e-7):
    dh = assemble_hessian(comm, atoms, "Fe_mm")
    modes = preconditioned_lowest_modes(dh, k, want_vectors=True)
    D = dense_D(atoms, "Fe_mm")
    exact = np.linalg.eigvalsh(D)[:k]
    assert np.allclose(modes.eigenvalues, exact, atol=atol)
    residual = D @ modes.vectors - modes.vectors * modes.eigenvalues
    assert np.linalg.norm(residual, axis=0).max() <= 1e-6               # the paper's tolerance
    assert np.allclose(modes.vectors.T @ modes.vectors, np.eye(k), atol=1e-6)
    return modes


def test_lowest_modes_of_a_vacancy_cell_equal_lapack(comm):
    _check_against_dense(comm, relaxed_fe_vacancy(4), 8)


def test_every_copy_of_a_degenerate_eigenvalue_is_found(comm):
    """Perfect bcc (4 a0)³: the lowest non-zero eigenvalue is 9-fold degenerate — the margin of
    extra pairs keeps GD from returning fewer copies."""
    modes = _check_against_dense(comm, bcc_supercell(4, fe_a0()), 12)
    assert np.ptp(modes.eigenvalues[3:]) < 1e-9


def test_negative_eigenvalue_of_an_indefinite_matrix(comm):
    """A vacancy neighbour moved 70 % of the way to the middle of its jump: D has one negative
    eigenvalue (LAPACK: −0.0958 eV/(Å² amu)), returned first, before the translations."""
    atoms = relaxed_fe_vacancy(4).copy()
    a0 = fe_a0()
    mover = int(np.argmin(np.linalg.norm(atoms.positions - 0.5 * a0, axis=1)))
    atoms.positions[mover] = 0.35 * a0
    modes = _check_against_dense(comm, atoms, 6)
    assert modes.eigenvalues[0] < -0.05 and np.all(modes.eigenvalues[1:] > -1e-9)


def test_newton_step_solves_the_projected_system(comm):
    """H dx = F (translations projected out) by ICC-preconditioned CG equals the dense
    pseudo-inverse solution."""
    atoms = relaxed_fe_vacancy(4).copy()
    atoms.positions += np.random.default_rng(3).normal(0.0, 0.01, atoms.positions.shape)
    pot = load_potential("Fe_mm")
    forces = pot.evaluate(atoms).forces
    dh = assemble_hessian(comm, atoms, pot)
    dx, its = preconditioned_newton_step(dh, forces, rtol=1e-12)
    H = pot.hessian(atoms).toarray()
    exact = np.linalg.lstsq(H, forces.ravel() - translation_vectors(atoms.get_masses(), False)
                            @ (translation_vectors(atoms.get_masses(), False).T @ forces.ravel()), rcond=1e-10)[0]
    assert np.abs(dx - exact).max() < 1e-8 * np.abs(exact).max()
    assert 0 < its < 200


@serial_only()
def test_route_follows_the_memory_the_factorisation_would_need(comm, monkeypatch):
    dh = assemble_hessian(comm, relaxed_fe_vacancy(4), "Fe_mm")
    monkeypatch.setenv("HPCVIB_MEMORY_LIMIT_MB", "100000")
    assert choose_mode_route(dh) == "shift-invert"
    monkeypatch.setenv("HPCVIB_MEMORY_LIMIT_MB", "1")
    assert choose_mode_route(dh) == "preconditioned"
    assert choose_mode_route(dh, "shift-invert") == "shift-invert"
    with pytest.raises(Exception, match="unknown mode route"):
        choose_mode_route(dh, "lanczos")
