"""Distributed PETSc assembly: same matrix on any number of ranks, exact preallocation,
PETSc matvec against scipy, partition properties."""

import numpy as np
import pytest
from mpi4py import MPI

from hpcvib.geometry.structures import bcc_supercell
from hpcvib.linalg.hessian import assemble_hessian, distribute_atoms
from hpcvib.parallel.partition import spatial_partition
from hpcvib.potentials import load_potential

from conftest import fe_a0
from test_potentials import random_si


def _structures():
    fe = bcc_supercell(4, fe_a0())
    del fe[5]
    fe.positions += np.random.default_rng(0).normal(scale=0.05, size=fe.positions.shape)
    return [("Fe_mm", fe), ("Si_sw_vink", random_si(64))]


@pytest.mark.parametrize("k", [0, 1])
def test_gathered_matrix_is_independent_of_rank_count(comm, k):
    """The matrix assembled over comm equals the serial one (COMM_SELF) to 1e-12 relative
    (in fact bit for bit: each row is computed with the same arithmetic)."""
    name, atoms = _structures()[k]
    dist = assemble_hessian(comm, atoms, name).gather_scipy()
    serial = assemble_hessian(MPI.COMM_SELF, atoms, name).gather_scipy()
    ref = load_potential(name).hessian(atoms)
    if comm.rank == 0:
        scale = np.abs(ref).max()
        assert abs(dist - serial).max() <= 1e-12 * scale
        assert abs(dist - ref).max() <= 1e-12 * scale


def test_petsc_matrices_apply_H_and_D(comm):
    name, atoms = _structures()[0]
    dh = assemble_hessian(comm, atoms, name)
    H = load_potential(name).hessian(atoms)
    m = atoms.get_masses()
    inv = np.repeat(1 / np.sqrt(m), 3)
    D = H.multiply(inv[:, None]).multiply(inv[None, :]).tocsr()
    x = np.random.default_rng(1).normal(size=3 * len(atoms))
    perm = np.empty(len(atoms), dtype=np.int64)
    perm[dh.layout.petsc_index] = np.arange(len(atoms))
    for symmetric in (False, True):
        for mass_weighted, ref in ((False, H), (True, D)):
            A = dh.petsc_matrix(mass_weighted=mass_weighted, symmetric=symmetric)
            assert A.getBlockSize() == 3
            info = A.getInfo()
            assert info["nz_unneeded"] == 0  # exact preallocation
            xv = A.createVecRight()
            lo, hi = xv.getOwnershipRange()
            xv.setArray(x.reshape(-1, 3)[perm].ravel()[lo:hi])
            yv = A.createVecLeft()
            A.mult(xv, yv)
            y = dh.to_original_order(np.concatenate(comm.allgather(yv.getArray().copy())))
            assert np.abs(y - ref @ x).max() < 1e-10 * np.abs(ref @ x).max()
            A.destroy()


def test_excluding_an_atom_gives_the_principal_submatrix(comm):
    name, atoms = _structures()[1]
    dh = assemble_hessian(comm, atoms, name)
    k = 13
    A = dh.petsc_matrix(mass_weighted=False, symmetric=False, exclude_atom=k)
    H = load_potential(name).hessian(atoms).toarray()
    keep = np.array([i for i in range(3 * len(atoms)) if i // 3 != k])
    sub = H[np.ix_(keep, keep)]
    # PETSc order without atom k
    pidx = dh.layout.petsc_index
    pk = pidx[k]
    pidx = np.delete(pidx - (pidx > pk), k)
    perm = np.empty(len(pidx), dtype=np.int64)
    perm[pidx] = np.arange(len(pidx))
    x = np.random.default_rng(2).normal(size=len(keep))
    xv = A.createVecRight()
    lo, hi = xv.getOwnershipRange()
    xv.setArray(x.reshape(-1, 3)[perm].ravel()[lo:hi])
    yv = A.createVecLeft()
    A.mult(xv, yv)
    y = np.concatenate(comm.allgather(yv.getArray().copy())).reshape(-1, 3)[pidx].ravel()
    assert np.abs(y - sub @ x).max() < 1e-10 * np.abs(sub @ x).max()
    A.destroy()


def test_spatial_partition_is_balanced_and_compact():
    atoms = bcc_supercell(6, 2.855)
    for parts in (2, 3, 7, 16):
        owner = spatial_partition(atoms.get_positions(), np.asarray(atoms.get_cell()), parts)
        counts = np.bincount(owner, minlength=parts)
        assert counts.max() - counts.min() <= 1
        # compact: each part spans a fraction of the cell along at least one axis
        for p in range(parts):
            span = np.ptp(atoms.get_scaled_positions()[owner == p], axis=0)
            assert span.min() < 0.99


def test_layout_covers_all_atoms(comm):
    atoms = bcc_supercell(3, 2.855)
    lay = distribute_atoms(comm, atoms)
    owned = np.concatenate(comm.allgather(lay.owned))
    assert np.array_equal(np.sort(owned), np.arange(len(atoms)))
    assert np.array_equal(np.sort(lay.petsc_index), np.arange(len(atoms)))
    assert lay.end - lay.start == lay.n_owned


def test_eam_pattern_is_exactly_the_non_zero_blocks():
    """Mendelev Fe: densities vanish beyond 4.2 Å, so the embedding term couples atoms only
    through a centre within 4.2 Å of both. Reference count per row from lattice geometry
    (brute force over lattice vectors b: |b| < r_c, or |c| < r_ρ and |b − c| < r_ρ for some c);
    every stored block of a rattled cell is non-zero and matches the finite-difference route
    (test_potentials) — a missing block would have been written into a wrong slot."""
    pot = load_potential("Fe_mm")
    assert pot.coupling_radius == pytest.approx(4.2, abs=4 * pot.dr)  # spline stencil: ±2 knots
    a0 = fe_a0()
    r = np.arange(-4, 5)
    cubic = np.array(np.meshgrid(r, r, r, indexing="ij")).reshape(3, -1).T
    lattice = a0 * np.concatenate([cubic, cubic + 0.5])
    norm = np.linalg.norm(lattice, axis=1)
    centres = lattice[(norm < pot.coupling_radius) & (norm > 0)]
    shared = np.any(np.linalg.norm(lattice[:, None, :] - centres[None], axis=2) < pot.coupling_radius, axis=1)
    expected = int(np.sum((norm < pot.cutoff) | shared | (norm < pot.coupling_radius)))
    atoms = bcc_supercell(6, a0)  # L/2 = 8.57 Å > 2 r_ρ: no two couplings through images merge
    rows = pot.hessian_rows(atoms)
    assert np.all(np.diff(rows.indptr) == expected)
    atoms.positions += np.random.default_rng(3).normal(scale=0.05, size=atoms.positions.shape)
    rows = pot.hessian_rows(atoms)
    assert np.all(np.abs(rows.blocks).max(axis=(1, 2)) > 0)
