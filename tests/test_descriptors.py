"""bSO(4) bispectrum: slow reference straight from the definition (Wigner matrices from the
generating function, Clebsch–Gordan from sympy), invariances, smoothness at the cut-off,
rank independence, and LAMMPS ``compute sna/atom`` (independent peer)."""

from math import factorial

import numpy as np
import pytest
from mpi4py import MPI

from hpcvib.learning.descriptors import (RFAC0, DescriptorSettings, clebsch_gordan, component_list,
                                descriptor_sums, per_atom_descriptors)
from hpcvib.geometry.structures import bcc_supercell

import lammps_peer
from conftest import fe_a0, serial_only


# --------------------------------------------------------------------------------------------
# slow reference
# --------------------------------------------------------------------------------------------
def wigner_generating(tj, a, b):
    """U^j_{m m'} = sqrt((j+m)!(j−m)!/((j+m')!(j−m')!)) [x^{j+m} y^{j−m}] (a x − b* y)^{j+m'} (b x + a* y)^{j−m'}
    (the spin-j representation of [[a, b], [−b*, a*]] on homogeneous polynomials)."""
    U = np.zeros((tj + 1, tj + 1), complex)
    for mb in range(tj + 1):  # j + m' = mb
        # polynomial in x (coefficient of x^p y^(tj−p) at index p)
        p1 = np.array([1.0 + 0j])
        for _ in range(mb):
            p1 = np.convolve(p1, [-np.conj(b), a])  # (−b* y + a x): index = power of x
        for _ in range(tj - mb):
            p1 = np.convolve(p1, [np.conj(a), b])   # (a* y + b x)
        for ma in range(tj + 1):  # j + m = ma = power of x
            norm = np.sqrt(factorial(ma) * factorial(tj - ma) / (factorial(mb) * factorial(tj - mb)))
            U[ma, mb] = norm * p1[ma]
    return U


def slow_descriptor(atoms, i, rcut, twojmax, comps, rfac0=RFAC0):
    import sympy
    from sympy.physics.quantum.cg import CG
    from ase.neighborlist import neighbor_list

    I, D = neighbor_list("iD", atoms, rcut)
    u = [np.eye(tj + 1, dtype=complex) for tj in range(twojmax + 1)]
    for x, y, z in D[I == i]:
        r = np.sqrt(x * x + y * y + z * z)
        theta0 = rfac0 * np.pi * r / rcut
        z0 = r / np.tan(theta0)
        r0 = np.sqrt(r * r + z0 * z0)
        a, b = (z0 - 1j * z) / r0, (y - 1j * x) / r0
        fc = 0.5 * (np.cos(np.pi * r / rcut) + 1)
        for tj in range(twojmax + 1):
            u[tj] += fc * wigner_generating(tj, a, b)
    half = sympy.Rational(1, 2)

    def cg(tj1, tm1, tj2, tm2, tj, tm):
        if abs(tm2) > tj2 or (tj2 + tm2) % 2:
            return 0.0
        return float(CG(tj1 * half, tm1 * half, tj2 * half, tm2 * half, tj * half, tm * half).doit())

    out = []
    for tj1, tj2, tj in comps:
        total = 0j
        for ma in range(tj + 1):
            for mb in range(tj + 1):
                tm, tmp = 2 * ma - tj, 2 * mb - tj
                z = 0j
                for ma1 in range(tj1 + 1):
                    for mb1 in range(tj1 + 1):
                        tm1, tm1p = 2 * ma1 - tj1, 2 * mb1 - tj1
                        c = cg(tj1, tm1, tj2, tm - tm1, tj, tm) * cg(tj1, tm1p, tj2, tmp - tm1p, tj, tmp)
                        if c == 0.0:
                            continue
                        ma2, mb2 = (tm - tm1 + tj2) // 2, (tmp - tm1p + tj2) // 2
                        z += c * u[tj1][ma1, mb1] * u[tj2][ma2, mb2]
                total += np.conj(u[tj][ma, mb]) * z
        out.append(total.real)
    return np.array(out)


def random_cell(n=40, length=9.0, seed=0):
    from ase import Atoms

    rng = np.random.default_rng(seed)
    return Atoms(f"Fe{n}", scaled_positions=rng.random((n, 3)), cell=[length] * 3, pbc=True)


# --------------------------------------------------------------------------------------------
def test_component_counts():
    assert len(component_list(8)) == 35       # the paper's set at jmax = 4
    assert len(component_list(8, full=True)) == 55  # LAMMPS sna/atom, twojmax = 8
    assert len(DescriptorSettings(jmax=4).components) == 35


def test_wigner_recursion_is_a_unitary_representation():
    """U^j from the generating function is unitary and multiplicative — checks the reference."""
    rng = np.random.default_rng(1)

    def su2():
        v = rng.normal(size=4)
        v /= np.linalg.norm(v)
        return v[0] + 1j * v[1], v[2] + 1j * v[3]

    (a1, b1), (a2, b2) = su2(), su2()
    # product of [[a, b], [−b*, a*]] matrices
    g = np.array([[a1, b1], [-np.conj(b1), np.conj(a1)]]) @ np.array([[a2, b2], [-np.conj(b2), np.conj(a2)]])
    a3, b3 = g[0, 0], g[0, 1]
    for tj in range(0, 9):
        U1, U2, U3 = (wigner_generating(tj, a, b) for a, b in ((a1, b1), (a2, b2), (a3, b3)))
        assert np.allclose(U1 @ U1.conj().T, np.eye(tj + 1), atol=1e-12)
        assert np.allclose(U1 @ U2, U3, atol=1e-12)


def test_clebsch_gordan_against_sympy():
    import sympy
    from sympy.physics.quantum.cg import CG

    half = sympy.Rational(1, 2)
    for tj1, tm1, tj2, tm2, tj in [(1, 1, 1, -1, 0), (2, 0, 2, 2, 4), (3, -1, 4, 2, 5), (8, 2, 8, -4, 6),
                                   (5, 3, 3, -1, 4), (8, 8, 8, -8, 0)]:
        ref = float(CG(tj1 * half, tm1 * half, tj2 * half, tm2 * half, tj * half, (tm1 + tm2) * half).doit())
        assert clebsch_gordan(tj1, tm1, tj2, tm2, tj, tm1 + tm2) == pytest.approx(ref, abs=1e-14)


@pytest.mark.parametrize("full", [False, True])
def test_against_slow_reference_on_random_environments(full):
    atoms = random_cell()
    rcut = 4.2
    settings = DescriptorSettings(jmax=4, rcut=rcut, full=full)
    fast = per_atom_descriptors(atoms, settings, centres=np.array([0, 7]))
    for row, i in zip(fast, (0, 7)):
        ref = slow_descriptor(atoms, i, rcut, 8, settings.components)
        assert np.allclose(row, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


def test_1024_atom_fe_cell_against_slow_reference():
    """(8 a0)³ bcc Fe with random displacements, r_cut = 5 Å: 1e-10 relative."""
    atoms = bcc_supercell(8, fe_a0())
    atoms.positions += np.random.default_rng(3).normal(scale=0.1, size=atoms.positions.shape)
    settings = DescriptorSettings(jmax=4, rcut=5.0)
    fast = per_atom_descriptors(atoms, settings)
    assert fast.shape == (1024, 35)
    for i in (0, 511, 1023):
        ref = slow_descriptor(atoms, i, 5.0, 8, settings.components)
        assert np.allclose(fast[i], ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


def test_invariances():
    atoms = random_cell(seed=5)
    s = DescriptorSettings(jmax=4, rcut=4.0)
    ref = per_atom_descriptors(atoms, s)
    scale = np.abs(ref).max()
    # rotation (of cell and positions together) and translation
    from scipy.spatial.transform import Rotation

    R = Rotation.from_euler("zyx", [0.3, -1.1, 2.0]).as_matrix()
    rot = atoms.copy()
    rot.set_cell(np.asarray(atoms.get_cell()) @ R.T, scale_atoms=False)
    rot.set_positions(atoms.get_positions() @ R.T + [1.3, -0.2, 4.0])
    assert np.abs(per_atom_descriptors(rot, s) - ref).max() < 1e-11 * scale
    # permutation of atoms
    perm = np.random.default_rng(0).permutation(len(atoms))
    assert np.abs(per_atom_descriptors(atoms[perm], s) - ref[perm]).max() < 1e-11 * scale
    # periodic images: the same atom in a 2×2×2 replica
    big = atoms.repeat((2, 2, 2))
    assert np.abs(per_atom_descriptors(big, s)[:len(atoms)] - ref).max() < 1e-11 * scale


def test_smooth_at_the_cutoff():
    """A neighbour crossing r_cut changes the descriptor continuously (f_c → 0 with zero slope)."""
    from ase import Atoms

    rcut = 4.0
    s = DescriptorSettings(jmax=4, rcut=rcut)
    vals = []
    for r in (rcut - 1e-4, rcut - 1e-6, rcut + 1e-6):
        atoms = Atoms("Fe2", positions=[[0, 0, 0], [r, 0.3, 0.2]], cell=[20, 20, 20], pbc=True)
        atoms.positions[1] *= r / np.linalg.norm(atoms.positions[1])
        vals.append(per_atom_descriptors(atoms, s)[0])
    lone = Atoms("Fe", positions=[[0, 0, 0]], cell=[20, 20, 20], pbc=True)
    alone = per_atom_descriptors(lone, s)[0]
    assert np.allclose(vals[2], alone, atol=1e-14)
    assert np.abs(vals[1] - alone).max() < 1e-9
    assert np.abs(vals[0] - alone).max() < 1e-5


def test_sums_identical_on_any_rank_count(comm):
    atoms = bcc_supercell(4, fe_a0())
    atoms.positions += np.random.default_rng(9).normal(scale=0.1, size=atoms.positions.shape)
    s = DescriptorSettings(jmax=4, rcut=5.0)
    dist = descriptor_sums(comm, atoms, s, keep_per_atom=True)
    ser = descriptor_sums(MPI.COMM_SELF, atoms, s)
    assert np.allclose(dist.D, ser.D, rtol=1e-13)
    assert np.allclose(dist.DD, ser.DD, rtol=1e-13)
    assert np.allclose(dist.per_atom.sum(axis=0), ser.D, rtol=1e-13)


@serial_only()
@pytest.mark.skipif(not lammps_peer.available(), reason="LAMMPS peer (.venv-lammps) not installed")
def test_against_lammps_sna_atom(tmp_path):
    """Every (j1, j2, j) that LAMMPS lists: full set, twojmax = 8, bzeroflag 0."""
    atoms = bcc_supercell(3, 2.8553)
    atoms.positions += np.random.default_rng(4).normal(scale=0.1, size=atoms.positions.shape)
    ref = np.array(lammps_peer.sna_atom(atoms, 5.0, 8, RFAC0, tmp_path))
    ours = per_atom_descriptors(atoms, DescriptorSettings(jmax=4, rcut=5.0, full=True))
    assert ref.shape == ours.shape == (len(atoms), 55)
    assert np.allclose(ours, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    # the diagonal (paper) set shares its triples with j ≥ j1 with LAMMPS's list
    diag = DescriptorSettings(jmax=4, rcut=5.0)
    full_list = [tuple(t) for t in component_list(8, full=True)]
    d = per_atom_descriptors(atoms, diag)
    for k, t in enumerate(map(tuple, diag.components)):
        if t in full_list:
            assert np.allclose(d[:, k], ref[:, full_list.index(t)], rtol=1e-10, atol=1e-10 * np.abs(ref).max())


@serial_only()
@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_descriptors_command_writes_files(tmp_path, suffix):
    import json

    import ase.io

    from test_cli import run

    frames = [bcc_supercell(3, 2.8553), bcc_supercell(2, 2.8553)]
    frames[0].positions += np.random.default_rng(1).normal(scale=0.05, size=frames[0].positions.shape)
    path = tmp_path / "cells.extxyz"
    ase.io.write(path, frames)
    out = tmp_path / f"desc{suffix}"
    lines = [json.loads(x) for x in run("descriptors", path, "-o", out, "--json", mpi=2).stdout.splitlines()]
    frames = ase.io.read(path, ":")  # the positions as written (8 decimals)
    ref = [per_atom_descriptors(a, DescriptorSettings(jmax=4, rcut=5.0)) for a in frames]
    assert [x["n_atoms"] for x in lines] == [54, 16]
    for line, r in zip(lines, ref):
        assert np.allclose(line["D"], r.sum(axis=0), rtol=1e-12)
    if suffix == ".npz":
        data = np.load(out)
        per_atom, D, DD, comps = data["s0_per_atom"], data["s0_D"], data["s0_DD"], data["components_j1_j2_j"]
    else:
        import h5py

        with h5py.File(out, "r") as fh:
            g = fh["structure_000000"]
            per_atom, D, DD, comps = g["per_atom"][()], g["D"][()], g["DD"][()], fh["components_j1_j2_j"][()]
    assert comps.shape == (35, 3) and np.allclose(comps[-1], [4, 4, 4])
    assert np.allclose(per_atom, ref[0], rtol=1e-12)
    assert np.allclose(DD, ref[0].T @ ref[0], rtol=1e-12)
    assert np.allclose(D, ref[0].sum(axis=0), rtol=1e-12)
