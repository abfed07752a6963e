"""Factorisation routes chosen by memory: the symbolic analysis states the need before any
numerical work; CHOLMOD in core when it fits, sequential MUMPS (METIS, factors discarded)
when it does not, a clear refusal when neither fits. Every route gives the same ln det' as
dense LAPACK (independent reference)."""

import numpy as np
import pytest
from mpi4py import MPI

from hpcvib.errors import HpcvibError
from hpcvib.geometry.structures import bcc_supercell
from hpcvib.linalg.hessian import assemble_hessian
from hpcvib.linalg.solvers import cholmod, mumps_seq
from hpcvib.linalg.spectral import MEMORY_LIMIT_VARIABLE, log_pseudo_determinant
from hpcvib.potentials import load_potential

from conftest import fe_a0, serial_only

pytestmark = [serial_only(),
              pytest.mark.skipif(not mumps_seq.available(), reason=mumps_seq.unavailable_reason())]


@pytest.fixture(scope="module")
def vacancy():
    pot = load_potential("Fe_mm")
    atoms = bcc_supercell(5, fe_a0())
    del atoms[7]
    atoms.positions[0] += [0.02, -0.01, 0.03]  # a generic (not stationary) configuration
    dh = assemble_hessian(MPI.COMM_SELF, atoms, pot)
    dense = dh.gather_scipy(mass_weighted=True).toarray()
    lam = np.linalg.eigvalsh(dense)
    nonzero = np.sort(np.abs(lam))[3:]  # the three translations are the zero modes
    return dh, float(np.sum(np.log(nonzero))), int(np.sum(lam < -1e-8))


def _ln(r):
    return r.ln_det_prime


def test_every_route_gives_the_dense_pseudo_determinant(vacancy, monkeypatch):
    dh, reference, _ = vacancy
    routes = {s: log_pseudo_determinant(dh, solver=s) for s in ("cholmod", "mumps-metis", "mumps")}
    for solver, r in routes.items():
        assert abs(_ln(r) - reference) < 1e-10 * abs(reference), solver
    assert routes["mumps-metis"].factorisation.solver == "mumps-metis"
    assert routes["mumps-metis"].factorisation.ordering == "metis"


def test_auto_route_falls_back_by_memory_and_refuses_when_nothing_fits(vacancy, monkeypatch):
    import scipy.sparse as sp

    dh, reference, _ = vacancy
    D = dh.gather_scipy(mass_weighted=True)[3:, 3:]
    chol_need = cholmod.cholesky_logdet(D, memory_limit_mb=0).estimated_mb
    with mumps_seq.SequentialMumps(sp.csr_matrix(D)) as m:
        mumps_need = m.estimated_mb
    assert chol_need > 0 and mumps_need > 0
    monkeypatch.setenv(MEMORY_LIMIT_VARIABLE, "1e9")
    assert log_pseudo_determinant(dh, pinned_atom=0).factorisation.solver == "cholmod"
    monkeypatch.setenv(MEMORY_LIMIT_VARIABLE, str(chol_need - 1))
    assert mumps_need < chol_need - 1  # discarding the factors needs less: 9 against 26 MB here
    r = log_pseudo_determinant(dh, pinned_atom=0)
    assert r.factorisation.solver == "mumps-metis" and abs(_ln(r) - reference) < 1e-10 * abs(reference)
    monkeypatch.setenv(MEMORY_LIMIT_VARIABLE, str(min(chol_need, mumps_need) - 1))
    with pytest.raises(HpcvibError, match="needs about .* MB .* more than the .* MB available"):
        log_pseudo_determinant(dh, pinned_atom=0)
    with pytest.raises(HpcvibError, match="CHOLMOD in core"):
        log_pseudo_determinant(dh, pinned_atom=0, solver="cholmod")


def test_saddle_like_matrix_inertia_from_sequential_mumps(vacancy):
    """An indefinite D (the vacancy cell squeezed so that modes go unstable): the number of
    negative pivots equals the dense count of negative eigenvalues."""
    from hpcvib.geometry.structures import bcc_supercell

    pot = load_potential("Fe_mm")
    atoms = bcc_supercell(4, fe_a0())
    atoms.positions[5] = atoms.positions[6] + [1.0, 0.9, 0.0]  # two atoms 1.35 Å apart: unstable
    dh = assemble_hessian(MPI.COMM_SELF, atoms, pot)
    lam = np.linalg.eigvalsh(dh.gather_scipy(mass_weighted=True).toarray())
    n_negative = int(np.sum(lam < -1e-8))
    assert n_negative > 0
    r = log_pseudo_determinant(dh, solver="mumps-metis")
    assert r.n_negative == n_negative
    nonzero = np.sort(np.abs(lam))[3:]
    assert abs(r.ln_det_prime - np.sum(np.log(nonzero))) < 1e-9 * abs(r.ln_det_prime)
