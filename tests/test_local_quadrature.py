"""Local entropies at scale (hpcvib.physics.local_entropy, quadrature route): the Gauss /
Gauss–Radau bracket of eᵀ ln(D) e against dense LAPACK (an SPD matrix, then every atom of a
vacancy cell and of a vacancy-jump saddle), the configuration's symmetry orbits against a
brute-force enumeration of the ideal lattice, the far-field remainder against the dense
decomposition, and rank-count independence (serial and 2 ranks)."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import fe_a0, fe_vacancy_saddle, relaxed_fe_vacancy, serial_only
from test_spectral_thermo import dense_D

from hpcvib.geometry.structures import bcc_supercell, minimum_image
from hpcvib.landscape.fingerprint import self_symmetry_orbits
from hpcvib.linalg.hessian import assemble_hessian
from hpcvib.linalg.lanczos_quadrature import log_quadratic_forms, sparse_block_operator
from hpcvib.physics.local_entropy import dense_local_decomposition, far_field_remainder
from hpcvib.workflow.local_entropies import atoms_near_defect, local_decomposition
from hpcvib.physics.thermo import analyse_perfect_crystal
from hpcvib.potentials import load_potential

POT = load_potential("Fe_mm")


@serial_only()
def test_bracket_contains_the_dense_value_of_a_quadratic_form():
    """eᵀ ln(A) e of an SPD matrix with spectrum in [0.01, 3]: Gauss–Radau ≤ exact ≤ Gauss, the
    exact value from LAPACK's eigen-decomposition; the width meets the tolerance."""
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.normal(size=(200, 200)))
    lam = np.geomspace(0.01, 3.0, 200)
    a = (q * lam) @ q.T
    starts = rng.normal(size=(200, 5))
    exact = np.einsum("ij,ij->j", starts, (q * np.log(lam)) @ (q.T @ starts))
    res = log_quadratic_forms(lambda x: a @ x, starts, lower=0.009, tol=1e-9)
    assert np.all(np.abs(res.value - exact) <= res.half_width + 1e-12)
    norms = np.einsum("ij,ij->j", starts, starts)
    assert np.all(res.half_width <= 0.5e-9 * norms + 1e-15)
    assert np.all(res.steps < 200)                                   # converged before the dimension


@serial_only()
def test_threaded_block_product_equals_scipy():
    rng = np.random.default_rng(1)
    a = sp.random(300, 300, density=0.05, random_state=2, format="csr")
    x = rng.normal(size=(300, 7))
    assert np.array_equal(sparse_block_operator(a)(x), a @ x)


def _dense_and_quadrature(comm, atoms, symmetry=True):
    dh = assemble_hessian(comm, atoms, POT)
    return dense_local_decomposition(POT, atoms), local_decomposition(dh, POT, atoms, "quadrature", symmetry=symmetry)


def test_every_atom_of_a_vacancy_cell_equals_dense(comm):
    """S_i of each of the 127 atoms of a (4 a0)³ vacancy cell within 1e-6 k_B of the dense
    eigen-decomposition, inside the stated bound; with and without the symmetry orbits."""
    atoms = relaxed_fe_vacancy(4)
    dense, quad = _dense_and_quadrature(comm, atoms)
    assert quad.evaluated_atoms < len(atoms) // 4                    # orbits under m-3m
    err = 0.5 * np.abs(quad.log_diagonal - dense.log_diagonal)       # S_i = … − ½ L_i
    assert err.max() < 1e-6
    assert np.all(err <= quad.error_bound + 1e-12)
    assert np.allclose(dense.entropy(300.0), quad.entropy(300.0), atol=1e-6, rtol=0)
    _, plain = _dense_and_quadrature(comm, atoms, symmetry=False)
    assert plain.evaluated_atoms == len(atoms)
    assert np.abs(plain.log_diagonal - quad.log_diagonal).max() < 2e-6


def test_saddle_negative_mode_is_flipped_exactly(comm):
    """The vacancy-jump saddle: L_i with ln|λ| of the unstable mode equals dense to 1e-6 k_B."""
    atoms = fe_vacancy_saddle(4)
    dense, quad = _dense_and_quadrature(comm, atoms)
    assert 0.5 * np.abs(quad.log_diagonal - dense.log_diagonal).max() < 1e-6


def test_far_field_remainder_equals_the_dense_sum_of_the_far_atoms(comm):
    """Atoms beyond 4 Å of the vacancy take ΔS_i = 0; the remainder S_f − Σ ΔS_i equals the
    dense decomposition's Σ over exactly those atoms."""
    atoms = relaxed_fe_vacancy(4)
    near = atoms_near_defect(atoms, POT, 4.0)
    assert 0 < len(near) < len(atoms)
    dh = assemble_hessian(comm, atoms, POT)
    quad = local_decomposition(dh, POT, atoms, "quadrature", radius=4.0)
    ref = analyse_perfect_crystal(POT, bcc_supercell(4, fe_a0()))
    dense = dense_local_decomposition(POT, atoms).formation(ref.ln_det_prime, ref.n_atoms)
    ds = quad.with_far_field(ref.ln_det_prime, ref.n_atoms).formation(ref.ln_det_prime, ref.n_atoms)
    far = np.setdiff1d(np.arange(len(atoms)), near)
    assert np.all(ds[far] == 0.0)
    assert np.allclose(ds[near], dense[near], atol=1e-6, rtol=0)
    assert abs(far_field_remainder(ds, dense.sum()) - dense[far].sum()) < 1e-5


@serial_only()
def test_vacancy_orbits_match_the_ideal_lattice_under_m3m():
    """The relaxed (4 a0)³ vacancy's orbits = the classes of the ideal lattice sites (the
    vacancy at the origin removed) under the 48 signed permutations, counted by brute force on
    integer half-lattice coordinates modulo the cell."""
    n = 4
    sites = [(i, j, k) for i, j, k in itertools.product(range(2 * n), repeat=3)
             if (i % 2 == j % 2 == k % 2) and (i, j, k) != (0, 0, 0)]
    classes = set()
    for s in sites:
        images = set()
        for perm in itertools.permutations(range(3)):
            for signs in itertools.product((1, -1), repeat=3):
                images.add(tuple((signs[a] * s[perm[a]]) % (2 * n) for a in range(3)))
        classes.add(min(images))
    atoms = relaxed_fe_vacancy(4)
    orbits = self_symmetry_orbits(atoms, POT.evaluate(atoms).energies)
    assert len(np.unique(orbits)) == len(classes)
    d = np.linalg.norm(minimum_image(atoms.positions, atoms.get_cell()), axis=1)
    for r in np.unique(orbits):                                       # members are equidistant
        assert np.ptp(d[orbits == r]) < 1e-6


@serial_only()
def test_a_perturbed_cell_has_no_symmetry():
    atoms = relaxed_fe_vacancy(4).copy()
    atoms.positions += np.random.default_rng(0).normal(0.0, 1e-3, atoms.positions.shape)
    assert len(np.unique(self_symmetry_orbits(atoms, POT.evaluate(atoms).energies))) == len(atoms)


@serial_only()
def test_lower_node_must_be_positive():
    with pytest.raises(Exception, match="positive"):
        log_quadratic_forms(lambda x: x, np.eye(3), lower=0.0, tol=1e-6)


@serial_only()
def test_far_field_radius_none_selects_every_atom():
    atoms = relaxed_fe_vacancy(4)
    assert len(atoms_near_defect(atoms, POT, None)) == len(atoms)
    assert np.array_equal(atoms_near_defect(bcc_supercell(3, fe_a0()), POT, 3.0), np.arange(54))


@serial_only()
def test_dense_D_helper_is_consistent():
    """The test helper's D (dense) has the three translations as its null space."""
    atoms = relaxed_fe_vacancy(4)
    w = np.linalg.eigvalsh(dense_D(atoms, "Fe_mm"))
    assert np.sum(np.abs(w) < 1e-9) == 3
