"""Potentials: forces, stress and analytic Hessians against finite differences, symmetry,
acoustic sum rule, and energies/forces against LAMMPS (independent peer, separate process)."""

import numpy as np
import pytest
from ase.build import bulk

from hpcvib.errors import InputError
from hpcvib.geometry.structures import bcc_supercell
from hpcvib.potentials import load_potential

import lammps_peer
from conftest import fe_a0, serial_only


def fd_forces(pot, atoms, h=1e-5):
    pos = atoms.get_positions()
    out = np.zeros_like(pos)
    for i in range(len(atoms)):
        for a in range(3):
            e = []
            for s in (1, -1):
                x = pos.copy()
                x[i, a] += s * h
                atoms.set_positions(x)
                e.append(pot.evaluate(atoms).energy)
            out[i, a] = -(e[0] - e[1]) / (2 * h)
    atoms.set_positions(pos)
    return out


def fd_hessian_columns(pot, atoms, atom_ids, h):
    """Columns of H for the given atoms by central differences of the analytic forces."""
    pos = atoms.get_positions()
    cols = []
    for i in atom_ids:
        for a in range(3):
            f = []
            for s in (1, -1):
                x = pos.copy()
                x[i, a] += s * h
                atoms.set_positions(x)
                f.append(pot.evaluate(atoms).forces.ravel())
            cols.append(-(f[0] - f[1]) / (2 * h))
    atoms.set_positions(pos)
    return np.array(cols).T


def fe_cases():
    a0 = fe_a0()
    rng = np.random.default_rng(7)
    vac = bcc_supercell(3, a0)
    del vac[0]
    sia = bcc_supercell(3, a0)
    # <110> dumbbell: replace atom 0 by two atoms split along [110]
    sia.positions[0] = [0.35 * a0, 0.35 * a0, 0.0]
    sia += sia[:1]
    sia.positions[-1] = [-0.35 * a0, -0.35 * a0, 0.0]
    strained = bcc_supercell(3, a0, strain=0.03)
    strained.positions += rng.normal(scale=0.02, size=strained.positions.shape)
    shaken = bcc_supercell(3, a0)
    shaken.positions += rng.normal(scale=0.12, size=shaken.positions.shape)
    return {"vacancy": vac, "sia_110": sia, "strained_3pc": strained, "random": shaken}


def random_si(n=64, density=2.192, seed=11):
    """a-Si-like random cell: random positions with a minimum separation of 2.0 Å."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    volume = n * 28.0855 / (density * 0.6022140857)
    length = volume ** (1 / 3)
    pos = []
    while len(pos) < n:
        p = rng.random(3) * length
        d = np.array(pos) - p if pos else np.zeros((0, 3))
        d -= length * np.round(d / length)
        if len(pos) == 0 or np.min(np.linalg.norm(d, axis=1)) > 2.0:
            pos.append(p)
    return Atoms(f"Si{n}", positions=pos, cell=[length] * 3, pbc=True)


@pytest.mark.parametrize("case", ["vacancy", "sia_110", "strained_3pc", "random"])
def test_fe_forces_and_hessian_against_finite_differences(case):
    """Forces vs FD of energy; Hessian vs FD of forces at h = 1e-6 Å.

    h is 1e-6 (not 1e-5) Å for tabulated EAM: LAMMPS's interpolant is C¹ (cubic Hermite), its
    second derivative jumps at the 10 000 knots of r φ(r) (up to 0.06 eV/Å² for Fe_mm) and of F(ρ)
    (up to 0.2 eV); a ±1e-5 Å stencil straddles a knot for ~4 % of pairs, and there the FD
    quotient is not a derivative. At 1e-6 Å such crossings are rare and the agreement is ~1e-9.
    """
    pot = load_potential("Fe_mm")
    atoms = fe_cases()[case]
    ev = pot.evaluate(atoms)
    assert np.abs(ev.forces - fd_forces(pot, atoms)).max() < 1e-7
    H = pot.hessian(atoms).toarray()
    ids = [0, 1, len(atoms) - 1]
    Hfd = fd_hessian_columns(pot, atoms, ids, h=1e-6)
    cols = np.concatenate([[3 * i, 3 * i + 1, 3 * i + 2] for i in ids])
    assert np.abs(H[:, cols] - Hfd).max() <= 1e-6
    assert np.abs(H - H.T).max() < 1e-12
    n = len(atoms)
    assert np.abs(H.reshape(n, 3, n, 3).sum(axis=2)).max() < 1e-11  # acoustic sum rule


@pytest.mark.parametrize("name", ["Si_sw", "Si_sw_vink"])
def test_sw_forces_and_hessian_against_finite_differences(name):
    """Stillinger–Weber is analytic: Hessian vs FD of forces at h = 1e-5 Å to 1e-6 eV/Å²."""
    pot = load_potential(name)
    atoms = random_si()
    assert np.abs(pot.evaluate(atoms).forces - fd_forces(pot, atoms)).max() < 1e-6
    H = pot.hessian(atoms).toarray()
    ids = [0, 7, 33]
    Hfd = fd_hessian_columns(pot, atoms, ids, h=1e-5)
    cols = np.concatenate([[3 * i, 3 * i + 1, 3 * i + 2] for i in ids])
    assert np.abs(H[:, cols] - Hfd).max() <= 1e-6
    assert np.abs(H - H.T).max() < 1e-12
    n = len(atoms)
    assert np.abs(H.reshape(n, 3, n, 3).sum(axis=2)).max() < 1e-11


@pytest.mark.parametrize("name,atoms", [
    ("Fe_mm", bulk("Fe", "bcc", a=2.8553, cubic=True)),           # 2 atoms, cut-off 5.3 Å
    ("Si_sw_vink", bulk("Si", "diamond", a=5.43, cubic=True)),    # 8 atoms, cut-off 3.77 Å
])
def test_small_cells_with_multiple_images(name, atoms):
    """Cells smaller than twice the interaction range: a supercell replica gives the same
    energy per atom and a Hessian whose Γ blocks fold back to the small cell's."""
    pot = load_potential(name)
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(2).normal(scale=0.05, size=atoms.positions.shape)
    big = atoms.repeat((2, 2, 2))
    e_small = pot.evaluate(atoms)
    e_big = pot.evaluate(big)
    assert e_big.energy == pytest.approx(8 * e_small.energy, rel=1e-12)
    assert np.allclose(e_big.forces[:len(atoms)], e_small.forces, atol=1e-10)
    n, nb = len(atoms), len(big)
    Hs = pot.hessian(atoms).toarray().reshape(n, 3, n, 3)
    Hb = pot.hessian(big).toarray().reshape(nb, 3, nb, 3)
    # replica k of atom j is atom j + k n: Γ-point folding of the big Hessian's first rows
    folded = Hb[:n].reshape(n, 3, 8, n, 3).sum(axis=2)
    assert np.abs(folded - Hs).max() < 1e-10
    Hfd = fd_hessian_columns(pot, atoms, [0], h=1e-6)
    assert np.abs(Hs.reshape(3 * n, 3 * n)[:, :3] - Hfd).max() < 1e-6


def test_stress_against_strain_derivative():
    """σ = (1/V) ∂E/∂ε (ASE convention) against central differences of E under strain."""
    for name, atoms in [("Fe_mm", fe_cases()["random"]), ("Si_sw", random_si(32))]:
        pot = load_potential(name)
        stress = pot.evaluate(atoms).stress
        cell, pos = np.asarray(atoms.get_cell()), atoms.get_positions()
        h = 1e-6
        for a, b in [(0, 0), (1, 2), (0, 1), (2, 2)]:
            e = []
            for s in (1, -1):
                eps = np.eye(3)
                eps[a, b] += s * h / 2
                eps[b, a] += s * h / 2
                strained = atoms.copy()
                strained.set_cell(cell @ eps, scale_atoms=False)
                strained.set_positions(pos @ eps)
                e.append(pot.evaluate(strained).energy)
            assert stress[a, b] == pytest.approx((e[0] - e[1]) / (2 * h) / atoms.get_volume(), abs=1e-8)


def test_fe_lattice_constant_from_the_potential():
    """a0 by energy minimisation equals the value written in Fe_mm.eam.fs (2.855324 Å)."""
    assert fe_a0() == pytest.approx(2.855324, abs=2e-6)


def test_ase_calculator_adapter_relaxes(comm):
    from ase.optimize import BFGS

    from hpcvib.potentials.calculator import HpcvibCalculator

    atoms = fe_cases()["vacancy"]
    atoms.calc = HpcvibCalculator("Fe_mm")
    BFGS(atoms, logfile=None).run(fmax=1e-6, steps=500)
    assert np.abs(atoms.get_forces()).max() < 1e-6
    assert atoms.get_stress().shape == (6,)


# ---------------------------------------------------------------------------------------------
# LAMMPS as an independent peer
# ---------------------------------------------------------------------------------------------
needs_lammps = pytest.mark.skipif(not lammps_peer.available(), reason="LAMMPS peer (.venv-lammps) not installed")


@serial_only()
@needs_lammps
@pytest.mark.parametrize("case", ["vacancy", "sia_110", "random"])
def test_fe_mm_matches_lammps(case, tmp_path):
    pot = load_potential("Fe_mm")
    atoms = fe_cases()[case]
    ref = lammps_peer.energy_forces(atoms, "eam/fs", pot.source, ["Fe"], tmp_path)
    ev = pot.evaluate(atoms)
    assert ev.energy == pytest.approx(ref["energy"], rel=1e-8)
    assert np.abs(ev.forces - np.array(ref["forces"])).max() < 1e-8 * np.abs(ref["forces"]).max() + 1e-10
    # LAMMPS pressure (bar, virial part and kinetic = 0) against our stress
    bar = 1.602176634e6  # 1 eV/Å³ = 160.2 GPa = 1.602e6 bar
    p = -np.array(ref["pressure_bar"])
    s = ev.stress
    ours = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]) * bar
    assert np.abs(ours - p).max() < 1e-6 * np.abs(p).max() + 1e-6


@serial_only()
@needs_lammps
@pytest.mark.parametrize("fname,style,elements", [("AlFe_mm.eam.fs", "eam/fs", ["Al", "Fe"]),
                                                   ("CuNi.eam.alloy", "eam/alloy", ["Cu", "Ni"])])
def test_two_species_eam_matches_lammps(fname, style, elements, tmp_path):
    """Multi-species conventions (which density function acts on which atom) against LAMMPS."""
    import os

    path = os.path.join(lammps_peer.potential_dir(), fname)
    pot = load_potential(path)
    atoms = bulk(elements[1], "bcc" if elements[1] == "Fe" else "fcc",
                 a=2.87 if elements[1] == "Fe" else 3.55, cubic=True).repeat((3, 3, 3))
    rng = np.random.default_rng(5)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[rng.random(len(atoms)) < 0.3] = elements[0]
    atoms.set_chemical_symbols(symbols.tolist())
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    ref = lammps_peer.energy_forces(atoms, style, path, elements, tmp_path)
    ev = pot.evaluate(atoms)
    assert ev.energy == pytest.approx(ref["energy"], rel=1e-8)
    assert np.abs(ev.forces - np.array(ref["forces"])).max() < 1e-8 * np.abs(ref["forces"]).max() + 1e-10
    H = pot.hessian(atoms).toarray()
    Hfd = fd_hessian_columns(pot, atoms, [0, 5], h=1e-6)
    assert np.abs(H[:, [0, 1, 2, 15, 16, 17]] - Hfd).max() < 1e-6


@serial_only()
@needs_lammps
def test_sw_matches_lammps(tmp_path):
    from hpcvib.potentials import data_file

    pot = load_potential(data_file("Si.sw"))
    atoms = random_si(64)
    ref = lammps_peer.energy_forces(atoms, "sw", pot.source, ["Si"], tmp_path)
    ev = pot.evaluate(atoms)
    assert ev.energy == pytest.approx(ref["energy"], rel=1e-10)
    assert np.abs(ev.forces - np.array(ref["forces"])).max() < 1e-9


def test_builtin_sw_equals_lammps_file():
    from hpcvib.potentials import data_file

    atoms = random_si(32)
    a = load_potential("Si_sw").evaluate(atoms)
    b = load_potential(data_file("Si.sw")).evaluate(atoms)
    assert a.energy == pytest.approx(b.energy, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# bad potential input
# ---------------------------------------------------------------------------------------------
def test_malformed_potential_files(tmp_path):
    bad = tmp_path / "broken.eam.fs"
    bad.write_text("a\nb\nc\n1 Fe\n10000 0.03 10000\n")
    with pytest.raises(InputError, match="broken.eam.fs.*malformed"):
        load_potential(str(bad))
    trunc = tmp_path / "short.eam.alloy"
    trunc.write_text("a\nb\nc\n1 Fe\n100 0.03 100 0.05 5.0\n26 55.845 2.85 bcc\n1 2 3\n")
    with pytest.raises(InputError, match="truncated"):
        load_potential(str(trunc))
    sw = tmp_path / "bad.sw"
    sw.write_text("Si Si Si 2.1 2.0 1.8 21 1.2\n")
    with pytest.raises(InputError, match="bad.sw.*14 fields"):
        load_potential(str(sw))
    with pytest.raises(InputError, match="not found"):
        load_potential(str(tmp_path / "missing.eam.fs"))
    with pytest.raises(InputError, match="unknown potential"):
        load_potential("NoSuchPotential")


def test_species_missing_from_potential():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    with pytest.raises(InputError, match="species Cu not in potential Fe_mm"):
        load_potential("Fe_mm").species_index(atoms, "cu.xyz")


def test_a_new_potential_is_one_registration(tmp_path, capsys, monkeypatch):
    """A toy potential (a scaled copy of Fe_mm's file, descriptor cut-off 4.2 Å) and a toy file
    format registered without touching any other file: loadable by name and by file ending,
    used by the CLI, and its own descriptor cut-off is the descriptors' default."""
    import json
    import shutil

    import ase.io

    from mpi4py import MPI

    from hpcvib import potentials
    from hpcvib.cli.commands import build_parser
    from hpcvib.potentials import EAM, data_file

    def command(*argv):  # the CLI's command in this process, without main()'s PETSc finalisation
        args = build_parser().parse_args(list(argv))
        args.command_class.run(args, MPI.COMM_SELF)

    monkeypatch.setattr(potentials, "BUILTIN_FACTORIES", dict(potentials.BUILTIN_FACTORIES))
    monkeypatch.setattr(potentials, "BUILTIN", dict(potentials.BUILTIN))
    monkeypatch.setattr(potentials, "FILE_LOADERS", dict(potentials.FILE_LOADERS))

    def toy():
        pot = EAM(data_file("Fe_mm.eam.fs"), style="fs", name="toy")
        pot.descriptor_cutoff = 4.2
        return pot

    potentials.register_builtin("toy", "a toy potential", toy)
    potentials.register_file_format((".toyfs",), lambda path: EAM(path, style="fs", name="toy file"))
    rank = MPI.COMM_WORLD.rank  # under mpiexec every rank runs this test in the same tmp_path
    copy = tmp_path / f"Fe{rank}.toyfs"
    shutil.copy(data_file("Fe_mm.eam.fs"), copy)
    assert load_potential("toy").descriptor_cutoff == 4.2 and load_potential(str(copy)).name == "toy file"
    assert load_potential(str(copy)).descriptor_cutoff == load_potential("Fe_mm").cutoff  # its own cut-off
    cell = tmp_path / f"fe{rank}.extxyz"
    ase.io.write(cell, bcc_supercell(2, fe_a0()), parallel=False)  # ASE writes on world rank 0 only otherwise
    capsys.readouterr()
    command("descriptors", str(cell), "-p", "toy", "--json")
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["settings"]["rcut"] == 4.2
    command("potentials")
    assert "toy" in capsys.readouterr().out
