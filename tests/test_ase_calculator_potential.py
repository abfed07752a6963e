"""Any ASE calculator as a potential (-p python:FILE.py:FACTORY): coloured finite-difference
Hessian against ASE's own Vibrations (EMT copper) and against the analytic Hessian of a
built-in driven through the ASE calculator adapter."""

import json
import subprocess
import sys
import textwrap

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import LBFGS
from mpi4py import MPI

from hpcvib.errors import InputError
from hpcvib.geometry.structures import bcc_supercell
from hpcvib.linalg.hessian import assemble_hessian
from hpcvib.linalg.spectral import log_pseudo_determinant
from hpcvib.potentials import load_potential

from conftest import fe_a0, serial_only
from test_cli import clean_env

pytestmark = serial_only()

EMT_MODULE = '''
"""EMT copper (ASE's built-in calculator)."""
from ase.calculators.emt import EMT

CUTOFF = 5.88  # Å: smooth cut-off at 5.38 Å, neighbour list to 5.88 Å
SPECIES = ["Cu"]


def calculator():
    return EMT()
'''

FE_MODULE = '''
from hpcvib.potentials.calculator import HpcvibCalculator

CUTOFF = 5.3


def calculator():
    return HpcvibCalculator("Fe_mm")
'''


def _module(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _ln_det_prime_dense(hessian, masses):
    m = np.repeat(masses, 3)
    w = np.linalg.eigvalsh(hessian / np.sqrt(np.outer(m, m)))
    return float(np.log(np.abs(w[np.argsort(np.abs(w))[3:]])).sum())


@pytest.fixture(scope="module")
def copper_vacancy():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    del atoms[0]
    atoms.calc = EMT()
    LBFGS(atoms, logfile=None).run(fmax=1e-9)
    atoms.calc = None
    return atoms


def test_emt_ln_det_matches_ase_vibrations(copper_vacancy, tmp_path):
    from ase.vibrations import Vibrations

    pot = load_potential("python:" + _module(tmp_path, "emt_cu.py", EMT_MODULE) + ":calculator")
    ours = log_pseudo_determinant(assemble_hessian(MPI.COMM_SELF, copper_vacancy, pot)).ln_det_prime
    work = copper_vacancy.copy()
    work.calc = EMT()
    vib = Vibrations(work, delta=1e-4, nfree=2, name=str(tmp_path / "vib"))
    vib.run()
    h = vib.get_vibrations().get_hessian_2d()
    ref = _ln_det_prime_dense(h, copper_vacancy.get_masses())
    assert abs(ours - ref) < 1e-6 * abs(ref)


def test_builtin_through_the_calculator_matches_the_analytic_hessian(tmp_path):
    atoms = bcc_supercell(3, fe_a0())
    del atoms[0]
    from hpcvib.landscape.exact_minimum import relax_exact

    atoms = relax_exact(atoms, load_potential("Fe_mm"), 1e-8).atoms
    fd = load_potential("python:" + _module(tmp_path, "fe.py", FE_MODULE) + ":calculator")
    analytic = log_pseudo_determinant(assemble_hessian(MPI.COMM_SELF, atoms, load_potential("Fe_mm"))).ln_det_prime
    numeric = log_pseudo_determinant(assemble_hessian(MPI.COMM_SELF, atoms, fd)).ln_det_prime
    # LAMMPS-style EAM tables are C¹: a 1e-4 Å stencil straddles spline knots (README note)
    assert abs(numeric - analytic) < 1e-4 * abs(analytic)


def test_fcc_bloch_reference_from_one_differenced_row(tmp_path):
    """A perfect fcc EMT copper cell: ln det' by Bloch sums from the single row that 6 force calls
    give equals dense eigvalsh of the whole coloured, symmetrised FD Hessian (FD round-off
    only), and the row costs 6 force calls, not 6 × colours."""
    from hpcvib.physics.thermo import bloch_ln_det_prime
    from hpcvib.potentials.fdhessian import coloured_fd_hessian

    pot = load_potential("python:" + _module(tmp_path, "emt_cu.py", EMT_MODULE) + ":calculator")
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat((2, 2, 3))
    calls = []
    real = pot.calculator

    class Counting(EMT):
        def calculate(self, *args, **kwargs):
            calls.append(1)
            super().calculate(*args, **kwargs)

    pot.calculator = Counting()
    ln_bloch, _ = bloch_ln_det_prime(pot, atoms)
    pot.calculator = real
    assert len(calls) == 6
    h, _ = coloured_fd_hessian(atoms, EMT(), 2.0 * 5.88)
    assert abs(ln_bloch - _ln_det_prime_dense(h.toarray(), atoms.get_masses())) < 1e-9 * abs(ln_bloch)


def test_cli_thermo_with_a_python_potential(copper_vacancy, tmp_path):
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, copper_vacancy)
    module = _module(tmp_path, "emt_cu.py", EMT_MODULE)
    env = clean_env()
    proc = subprocess.run([sys.executable, "-m", "hpcvib.cli.commands", "thermo", str(path), "-p", f"python:{module}:calculator",
                           "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["kind"] == "minimum"
    bad = subprocess.run([sys.executable, "-m", "hpcvib.cli.commands", "thermo", str(path), "-p", f"python:{module}:nosuch"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "no callable 'nosuch'" in bad.stderr


def test_module_must_state_its_cutoff(tmp_path):
    module = _module(tmp_path, "nocut.py", "from ase.calculators.emt import EMT\n\ndef calc():\n    return EMT()\n")
    with pytest.raises(InputError, match="CUTOFF"):
        load_potential(f"python:{module}:calc")
