"""Shared fixtures. The suite runs serially and under ``mpiexec -n 2`` (``make test``).

Every rank runs every test in the same order; tests that use MPI take the ``comm`` fixture
(COMM_WORLD) and assert on quantities every rank holds, so a failure is raised on all ranks.
After each test, garbage is collected and the ranks meet, so collective PETSc destructors run
together (DOLFINx ``conftest.py`` habit).
"""

import functools
import gc

import numpy as np
import pytest
from mpi4py import MPI

from hpcvib.geometry.structures import bcc_supercell
from hpcvib.potentials import lattice_constant, load_potential
from hpcvib.potentials.calculator import HpcvibCalculator


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Under mpiexec only rank 0 reports; the other ranks still run (and fail) every test."""
    if MPI.COMM_WORLD.size > 1 and MPI.COMM_WORLD.rank != 0:
        import os

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter._tw = type(reporter._tw)(open(os.devnull, "w"))


def pytest_sessionfinish(session, exitstatus):
    """Every rank must agree on failure: the job fails if any rank failed."""
    if MPI.COMM_WORLD.size > 1:
        failed = MPI.COMM_WORLD.allreduce(int(session.testsfailed > 0 or exitstatus not in (0, 5)))
        if failed and session.exitstatus == 0:
            session.exitstatus = 1


@pytest.fixture
def comm():
    return MPI.COMM_WORLD


@pytest.fixture(autouse=True)
def _collective_cleanup():
    yield
    gc.collect()
    MPI.COMM_WORLD.Barrier()


def serial_only():
    return pytest.mark.skipif(MPI.COMM_WORLD.size > 1, reason="serial check (runs in the serial pass)")


@functools.lru_cache(maxsize=None)
def fe_a0() -> float:
    return lattice_constant(load_potential("Fe_mm"), "bcc")


def relax(atoms, potential="Fe_mm", fmax=1e-8, steps=20000):
    """Relax at fixed cell with FIRE then L-BFGS (deterministic; same on every rank)."""
    from ase.optimize import BFGS, FIRE

    atoms = atoms.copy()
    atoms.calc = HpcvibCalculator(potential)
    FIRE(atoms, logfile=None).run(fmax=1e-4, steps=steps)
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    atoms.calc = None
    return atoms


@functools.lru_cache(maxsize=None)
def relaxed_fe_vacancy(n: int = 4):
    """Relaxed bcc Fe (n a0)³ cell with one vacancy (atom 0 removed)."""
    atoms = bcc_supercell(n, fe_a0())
    del atoms[0]
    return relax(atoms)


def fe_vacancy_saddle(n: int = 4):
    """The Newton-refined vacancy-jump saddle (see :func:`fe_vacancy_neb`)."""
    return fe_vacancy_neb(n)["saddle"]


@functools.lru_cache(maxsize=None)
def fe_vacancy_neb(n: int = 4):
    """Vacancy-jump saddle in a bcc Fe (n a0)³ cell: climbing-image NEB, then Newton steps with
    the exact dense Hessian (pseudo-inverse without the translations) to |F| < 1e-9 eV/Å.

    With Mendelev's Fe the mid-point of the jump is a shallow metastable minimum; the CI-NEB
    image with the highest energy sits at one of the two symmetric saddles beside it."""
    from ase.mep import NEB
    from ase.optimize import FIRE

    a0 = fe_a0()
    perfect = bcc_supercell(n, a0)
    initial = perfect.copy()
    del initial[0]  # vacancy at the origin
    # nearest neighbour of the removed atom at (a0/2, a0/2, a0/2): atom index 0 of initial
    mover = int(np.argmin(np.linalg.norm(initial.positions - 0.5 * a0, axis=1)))
    final = initial.copy()
    final.positions[mover] = perfect.positions[0]
    initial, final = relax(initial), relax(final)
    images = [initial] + [initial.copy() for _ in range(7)] + [final]
    for im in images:
        im.calc = HpcvibCalculator("Fe_mm")
    neb = NEB(images, climb=True, method="improvedtangent", allow_shared_calculator=False)
    neb.interpolate()
    FIRE(neb, logfile=None).run(fmax=5e-3, steps=5000)
    top = max(images[1:-1], key=lambda im: im.get_potential_energy())
    e_initial = images[0].get_potential_energy()
    return {"initial": initial, "final": final, "mover": mover, "vacancy_site": perfect.positions[0],
            "neb_barrier": top.get_potential_energy() - e_initial,
            "saddle": newton_to_stationary_point(top, "Fe_mm")}


def newton_to_stationary_point(atoms, potential, ftol=1e-9, steps=50):
    pot = load_potential(potential)
    atoms = atoms.copy()
    atoms.calc = None
    for _ in range(steps):
        f = pot.evaluate(atoms).forces
        if np.abs(f).max() < ftol:
            return atoms
        H = pot.hessian(atoms).toarray()
        w, v = np.linalg.eigh(H)
        keep = np.abs(w) > 1e-8
        step = v[:, keep] @ ((v[:, keep].T @ f.ravel()) / w[keep])
        atoms.positions += step.reshape(-1, 3)
    raise RuntimeError("Newton did not converge to a stationary point")
