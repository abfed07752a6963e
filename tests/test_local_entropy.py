"""Exact local entropies (hpcvib.physics.local_entropy): sum rules against the factorisation route,
the analytic projector weight, the far-field bulk value, and the CLI output."""

import json
import subprocess
import sys

import ase.io
import numpy as np
from mpi4py import MPI

from hpcvib.geometry.structures import bcc_supercell, minimum_image
from hpcvib.landscape.exact_minimum import relax_exact
from hpcvib.linalg.hessian import assemble_hessian
from hpcvib.linalg.spectral import log_pseudo_determinant
from hpcvib.physics.local_entropy import dense_local_decomposition
from hpcvib.physics.thermo import analyse_perfect_crystal, formation_entropy, vibrational_entropy
from hpcvib.potentials import load_potential

from conftest import fe_a0, fe_vacancy_saddle, serial_only
from test_cli import clean_env

POT = load_potential("Fe_mm")
pytestmark = serial_only()


def _vacancy(n=4):
    atoms = bcc_supercell(n, fe_a0())
    del atoms[0]
    return relax_exact(atoms, POT, 1e-7).atoms


def test_sums_equal_s_vib_and_s_f():
    atoms = _vacancy()
    dec = dense_local_decomposition(POT, atoms)
    ln_det = log_pseudo_determinant(assemble_hessian(MPI.COMM_SELF, atoms, POT)).ln_det_prime
    assert abs(dec.ln_det_prime - ln_det) < 1e-9 * abs(ln_det)
    for t in (100.0, 800.0):
        assert abs(dec.entropy(t).sum() - vibrational_entropy(ln_det, len(atoms), t)) < 1e-8
    ref = analyse_perfect_crystal(POT, bcc_supercell(4, fe_a0()))
    s_f, _ = formation_entropy(ln_det, len(atoms), ref.ln_det_prime, ref.n_atoms)
    assert abs(dec.formation(ref.ln_det_prime, ref.n_atoms).sum() - s_f) < 1e-8
    # the projector weight of atom i is 3(1 − m_i/M) (the translations removed)
    assert np.allclose(dec.projector, 3.0 * (1.0 - 1.0 / len(atoms)), atol=1e-10)


def test_perfect_crystal_sites_are_all_equal_and_the_defect_is_local():
    perfect = bcc_supercell(4, fe_a0())
    dec = dense_local_decomposition(POT, perfect)
    assert np.ptp(dec.log_diagonal) < 1e-9
    ref = analyse_perfect_crystal(POT, perfect)
    assert np.allclose(dec.formation(ref.ln_det_prime, ref.n_atoms), 0.0, atol=1e-9)
    atoms = _vacancy()
    ds = dense_local_decomposition(POT, atoms).formation(ref.ln_det_prime, ref.n_atoms)
    site = np.zeros(3)  # the removed atom sat at the origin
    d = np.linalg.norm(minimum_image(atoms.positions - site, atoms.get_cell()), axis=1)
    near, far = ds[d < 3.0], ds[d > 5.0]
    assert np.abs(near).max() > 10 * np.abs(far).max()


def test_saddle_uses_the_absolute_eigenvalues():
    saddle = fe_vacancy_saddle(4)
    dec = dense_local_decomposition(POT, saddle)
    ln_det = log_pseudo_determinant(assemble_hessian(MPI.COMM_SELF, saddle, POT)).ln_det_prime
    assert abs(dec.ln_det_prime - ln_det) < 1e-9 * abs(ln_det)


def test_thermo_local_writes_per_atom_arrays(tmp_path):
    atoms = _vacancy()
    path = tmp_path / "vac.extxyz"
    ase.io.write(path, atoms)
    out = tmp_path / "local.extxyz"
    env = clean_env()
    proc = subprocess.run([sys.executable, "-m", "hpcvib.cli.commands", "thermo", str(path), "-p", "Fe_mm", "--reference",
                           "auto", "-t", "300", "--local", "-o", str(out), "--json"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    local = res["local"]
    assert abs(local["sum_S_local_kB"] - res["S_vib_kB"]) < 1e-6
    assert abs(local["sum_dS_local_kB"] - local["S_f_Eq20_kB"]) < 1e-6
    frame = ase.io.read(out)
    assert np.isclose(frame.arrays["dS_local_kB"].sum(), local["S_f_Eq20_kB"], atol=len(frame) * 5e-8)
    assert "S_local_kB" in frame.arrays


def test_thermo_local_quadrature_with_radius_reports_the_far_field(tmp_path):
    """--local-radius: atoms beyond it carry dS_local = 0 in the file; the JSON's remainder is
    S_f − Σ dS_i, and equals the dense decomposition's sum over the far atoms."""
    atoms = _vacancy()
    path = tmp_path / "vac.extxyz"
    ase.io.write(path, atoms)
    out = tmp_path / "local.extxyz"
    proc = subprocess.run([sys.executable, "-m", "hpcvib.cli.commands", "thermo", str(path), "-p", "Fe_mm",
                           "--reference", "auto", "--local", "--local-radius", "4", "-o", str(out), "--json"],
                          capture_output=True, text=True, env=clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    local = json.loads(proc.stdout)["local"]
    assert local["route"] == "quadrature" and local["local_radius_A"] == 4.0
    assert "far-field remainder" in proc.stderr                       # 4 Å is not enough: warned
    frame = ase.io.read(out)
    ref = analyse_perfect_crystal(POT, bcc_supercell(4, fe_a0()))
    dense = dense_local_decomposition(POT, atoms).formation(ref.ln_det_prime, ref.n_atoms)
    far = frame.arrays["dS_local_kB"] == 0.0
    assert 0 < far.sum() < len(frame)
    assert abs(local["far_field_remainder_kB"] - dense[far].sum()) < 1e-5


def test_local_radius_needs_a_reference(tmp_path):
    path = tmp_path / "vac.extxyz"
    ase.io.write(path, bcc_supercell(2, fe_a0()))
    proc = subprocess.run([sys.executable, "-m", "hpcvib.cli.commands", "thermo", str(path), "-p", "Fe_mm",
                           "-t", "300", "--local", "--local-radius", "4"],
                          capture_output=True, text=True, env=clean_env(), timeout=120)
    assert proc.returncode != 0 and "--reference" in proc.stderr and proc.stderr.strip().count("\n") == 0
