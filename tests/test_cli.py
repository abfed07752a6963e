"""The command line as a user runs it: outputs, JSON, MPI runs and bad input (one-line errors,
non-zero exit, nothing written)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import ase.io

from hpcvib.geometry.structures import bcc_supercell
from hpcvib.linalg.matrixio import read_matrix
from hpcvib.potentials import load_potential

from conftest import fe_a0, fe_vacancy_saddle, relaxed_fe_vacancy, serial_only
from test_potentials import fd_hessian_columns

pytestmark = serial_only()

HPCVIB = [sys.executable, "-m", "hpcvib.cli.commands"]


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(*args, mpi=0, check=True):
    cmd = HPCVIB + [str(a) for a in args]
    if mpi:
        flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
        cmd = [shutil.which("mpiexec"), *flags, "-n", str(mpi)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def vacancy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "fe_vacancy.extxyz"
    atoms = bcc_supercell(8, fe_a0())
    del atoms[0]
    ase.io.write(path, atoms)
    return path


@pytest.mark.parametrize("suffix", [".npz", ".mtx", ".petsc"])
def test_hessian_command_writes_a_checkable_matrix(vacancy_file, tmp_path, suffix):
    """1023-atom Fe cell with a vacancy: the written H agrees with FD of forces (h = 1e-6 Å)."""
    out = tmp_path / f"H{suffix}"
    proc = run("hessian", vacancy_file, "-p", "Fe_mm", "-o", out, "--json")
    info = json.loads(proc.stdout)
    assert info["n_atoms"] == 1023 and info["units"] == "eV/A^2"
    H = read_matrix(str(out))
    assert H.shape == (3069, 3069) and H.nnz == info["nnz"]
    atoms = ase.io.read(vacancy_file)
    Hfd = fd_hessian_columns(load_potential("Fe_mm"), atoms, [0], h=1e-6)
    assert np.abs(H[:, :3].toarray() - Hfd).max() < 1e-6


def test_petsc_binary_loads_in_petsc(vacancy_file, tmp_path):
    from hpcvib.linalg.petsc_env import init_petsc

    PETSc = init_petsc()
    out = tmp_path / "H.petsc"
    run("hessian", vacancy_file, "-p", "Fe_mm", "-o", out)
    from mpi4py import MPI

    viewer = PETSc.Viewer().createBinary(str(out), "r", comm=MPI.COMM_SELF)
    A = PETSc.Mat().create(comm=MPI.COMM_SELF)
    A.setType("aij")
    A.load(viewer)
    H = read_matrix(str(out))
    x = np.random.default_rng(0).normal(size=H.shape[0])
    xv, y = A.createVecs()
    xv.setArray(x)
    A.mult(xv, y)
    assert np.allclose(y.getArray(), H @ x, rtol=1e-12, atol=1e-10)
    A.destroy()
    viewer.destroy()


def test_hessian_under_mpiexec_equals_serial(vacancy_file, tmp_path):
    run("hessian", vacancy_file, "-p", "Fe_mm", "-o", tmp_path / "a.npz")
    run("hessian", vacancy_file, "-p", "Fe_mm", "-o", tmp_path / "b.npz", mpi=2)
    a, b = read_matrix(str(tmp_path / "a.npz")), read_matrix(str(tmp_path / "b.npz"))
    assert abs(a - b).max() <= 1e-12 * abs(a).max()


def test_thermo_json_and_mpi(tmp_path):
    path = tmp_path / "vac.extxyz"
    ase.io.write(path, relaxed_fe_vacancy(4))
    outs = []
    for mpi in (0, 2):
        proc = run("thermo", path, "-p", "Fe_mm", "--reference", "auto", "-t", "300", "--modes", "4",
                   "--json", mpi=mpi)
        outs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    a, b = outs
    for key in ("n_atoms", "energy_eV", "kind", "n_negative", "ln_det_prime", "lowest_eigenvalues",
                "S_vib_kB", "S_f_kB", "S_f_convention"):
        assert key in a
    assert a["kind"] == "minimum" and a["S_f_convention"] == "Eq19(T=300K)"
    assert abs(a["S_f_kB"] - b["S_f_kB"]) < 1e-8
    assert abs(a["ln_det_prime"] - b["ln_det_prime"]) < 1e-9 * abs(a["ln_det_prime"])


def test_thermo_many_structures_as_json_lines(tmp_path):
    frames = [relaxed_fe_vacancy(4), bcc_supercell(4, fe_a0())]
    path = tmp_path / "many.extxyz"
    ase.io.write(path, frames)
    proc = run("thermo", path, "-p", "Fe_mm", "--json")
    lines = [json.loads(x) for x in proc.stdout.strip().splitlines()]
    assert [x["n_atoms"] for x in lines] == [127, 128]
    assert all(x["kind"] == "minimum" for x in lines)


def test_prefactor_command(tmp_path):
    m, s = tmp_path / "m.extxyz", tmp_path / "s.extxyz"
    ase.io.write(m, relaxed_fe_vacancy(4))
    ase.io.write(s, fe_vacancy_saddle(4))
    out = json.loads(run("prefactor", m, s, "-p", "Fe_mm", "-t", "300", "600", "--json").stdout)
    for key in ("delta_E_eV", "ln_nu_THz", "nu_THz", "lambda_neg", "rate_per_s"):
        assert key in out
    assert out["lambda_neg"] < 0 and len(out["rate_per_s"]) == 2
    assert out["rate_per_s"][1] > out["rate_per_s"][0]


def test_prefactor_rejects_swapped_minimum_and_saddle(tmp_path):
    m, s = tmp_path / "m.extxyz", tmp_path / "s.extxyz"
    ase.io.write(m, relaxed_fe_vacancy(4))
    ase.io.write(s, fe_vacancy_saddle(4))
    proc = run("prefactor", s, m, "-p", "Fe_mm", check=False)
    assert proc.returncode == 2
    assert "expected a minimum" in proc.stderr and "negative eigenvalue" in proc.stderr


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.strip().splitlines() if x.startswith("hpcvib: error:")]
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_inputs_give_one_line_errors(tmp_path):
    out = tmp_path / "H.npz"
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not\na structure file\n")
    _one_line_error(run("hessian", garbage, "-p", "Fe_mm", "-o", out, check=False), "garbage.xyz", "cannot read")
    _one_line_error(run("hessian", tmp_path / "none.xyz", "-p", "Fe_mm", "-o", out, check=False), "none.xyz", "no such file")
    cu = tmp_path / "cu.extxyz"
    from ase.build import bulk
    ase.io.write(cu, bulk("Cu", "fcc", a=3.6, cubic=True))
    _one_line_error(run("hessian", cu, "-p", "Fe_mm", "-o", out, check=False), "cu.extxyz", "species Cu not in potential")
    bad_pot = tmp_path / "bad.eam.fs"
    bad_pot.write_text("x\ny\nz\n1 Fe\nnot numbers\n")
    fe = tmp_path / "fe.extxyz"
    ase.io.write(fe, bcc_supercell(2, 2.855))
    _one_line_error(run("hessian", fe, "-p", bad_pot, "-o", out, check=False), "bad.eam.fs", "malformed")
    close = bcc_supercell(2, 2.855)
    close.positions[1] = close.positions[0] + [0.2, 0, 0]
    ase.io.write(tmp_path / "close.extxyz", close)
    _one_line_error(run("hessian", tmp_path / "close.extxyz", "-p", "Fe_mm", "-o", out, check=False),
                    "close.extxyz", "Å apart")
    molecule = bcc_supercell(2, 2.855)
    molecule.pbc = False
    ase.io.write(tmp_path / "mol.xyz", molecule)
    _one_line_error(run("hessian", tmp_path / "mol.xyz", "-p", "Fe_mm", "-o", out, check=False),
                    "mol.xyz", "periodic")
    nan = tmp_path / "nan.extxyz"
    good = bcc_supercell(2, 2.855)
    ase.io.write(nan, good)
    text = nan.read_text().splitlines()
    text[2] = text[2].replace(text[2].split()[1], "nan", 1)
    nan.write_text("\n".join(text) + "\n")
    _one_line_error(run("hessian", nan, "-p", "Fe_mm", "-o", out, check=False), "nan.extxyz", "non-finite")
    _one_line_error(run("hessian", fe, "-p", "Fe_mm", "-o", tmp_path / "H.txt", check=False), "H.txt", "unknown matrix format")
    assert not out.exists()
    # the same under MPI: every rank exits cleanly with one message
    _one_line_error(run("hessian", cu, "-p", "Fe_mm", "-o", out, mpi=2, check=False), "species Cu")


def test_version_and_help():
    from hpcvib import __version__

    assert __version__ in run("--version").stdout
    for cmd in ("hessian", "thermo", "prefactor", "potentials"):
        assert "usage" in run(cmd, "--help").stdout


def _relaxed_fcc_vacancy():
    """Fe_mm's metastable fcc lattice, 3×3×3 cubic cells strained by 1 %, one vacancy, relaxed
    (unstrained, the symmetric vacancy of this small cell is a saddle of Fe_mm: two tiny negative
    eigenvalues)."""
    from hpcvib.geometry.structures import cubic_supercell
    from hpcvib.landscape.exact_minimum import relax_exact
    from hpcvib.potentials import lattice_constant

    pot = load_potential("Fe_mm")
    atoms = cubic_supercell("fcc", 3, lattice_constant(pot, "fcc"), strain=0.01)
    del atoms[0]
    relaxed = relax_exact(atoms, pot, 1e-7)
    assert relaxed.n_negative == 0
    return relaxed.atoms


@pytest.mark.parametrize("host", ["bcc", "fcc"])
def test_auto_reference_by_bloch_sums_equals_factorised_reference_file(tmp_path, host):
    """`--reference auto` (host detected from the cell, perfect cell by Bloch sums, no
    factorisation) and the same perfect cell given as a file (sparse factorisation) give the
    same S_f, for a bcc and an fcc vacancy."""
    from hpcvib.physics.thermo import perfect_cubic_reference

    defect = relaxed_fe_vacancy(4) if host == "bcc" else _relaxed_fcc_vacancy()
    path, bulk = tmp_path / "vac.extxyz", tmp_path / "bulk.extxyz"
    ase.io.write(path, defect)
    ase.io.write(bulk, perfect_cubic_reference(defect))
    auto = json.loads(run("thermo", path, "-p", "Fe_mm", "--reference", "auto", "--json").stdout)
    given = json.loads(run("thermo", path, "-p", "Fe_mm", "--reference", bulk, "--json").stdout)
    assert auto["reference"]["method"] == "bloch" and given["reference"]["method"] != "bloch"
    assert auto["reference"]["structure"] == f"auto {host}"
    assert auto["S_f_kB"] == pytest.approx(given["S_f_kB"], abs=1e-9)
    assert auto["reference"]["ln_det_prime"] == pytest.approx(given["reference"]["ln_det_prime"], rel=1e-12)


def _subcommands():
    from hpcvib.cli.commands import COMMANDS

    return [name for name, _ in COMMANDS]


@pytest.mark.parametrize("name", _subcommands())
def test_every_subcommand_help_returns_under_mpiexec(name):
    """--help of every sub-command under 2 ranks: printed once, exit 0, no hang (a hang fails by
    the timeout)."""
    proc = subprocess.run([shutil.which("mpiexec"), "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
                          + ["-n", "2"] + HPCVIB + [name, "--help"], capture_output=True, text=True,
                          env=clean_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("usage:") == 1


@pytest.mark.parametrize("args,code", [(["potentials", "Fe_mm"], 0), (["potentials"], 0),
                                       (["potentials", "nosuch"], 2)])
def test_potentials_returns_under_mpiexec(args, code):
    """Was a deadlock: rank 1 returned before rank 0's collective load."""
    proc = subprocess.run([shutil.which("mpiexec"), "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
                          + ["-n", "2"] + HPCVIB + args, capture_output=True, text=True, env=clean_env(), timeout=120)
    assert proc.returncode == code, proc.stderr[-2000:]
    if code == 0 and len(args) > 1:
        assert proc.stdout.count('"sha256"') == 1
    if code:
        assert proc.stderr.count("hpcvib: error:") == 1


def test_lammps_files_with_types_only(tmp_path):
    """A dump written by LAMMPS (type column only) and a data file without Masses, read with
    --types Fe, give the S_f of the extxyz route (was: read as hydrogen and refused)."""
    import lammps_peer
    from hpcvib.potentials import data_file

    atoms = relaxed_fe_vacancy(4)
    ref = tmp_path / "vac.extxyz"
    ase.io.write(ref, atoms)
    data = tmp_path / "vac.data"
    ase.io.write(data, atoms, format="lammps-data", masses=False)
    assert "Masses" not in data.read_text()
    files = [data]
    if lammps_peer.available():
        dump = tmp_path / "vac.dump"
        lammps_peer.run({"data": str(data), "pair_style": "eam/fs",
                         "pair_coeff": f"* * {data_file('Fe_mm.eam.fs')} Fe",
                         "extra": f"mass 1 55.845\nwrite_dump all custom {dump} id type x y z modify sort id format float %.17g"})
        assert "type x y z" in dump.read_text()
        files.append(dump)
    expected = json.loads(run("thermo", ref, "-p", "Fe_mm", "--reference", "auto", "--json").stdout)["S_f_kB"]
    for path in files:
        bad = run("thermo", path, "-p", "Fe_mm", "--json", check=False)
        assert bad.returncode == 2 and "not in potential" in bad.stderr
        out = json.loads(run("thermo", path, "-p", "Fe_mm", "--types", "Fe", "--reference", "auto", "--json").stdout)
        assert abs(out["S_f_kB"] - expected) < 1e-6, path
    wrong = run("thermo", ref, "-p", "Fe_mm", "--types", "Fe", check=False)
    assert wrong.returncode == 2 and "--types applies to LAMMPS" in wrong.stderr
    unknown = run("thermo", data, "-p", "Fe_mm", "--types", "Xx", check=False)
    assert unknown.returncode == 2 and "not an element symbol" in unknown.stderr
