"""CHOLMOD backend: supernodal Cholesky log-determinants against numpy/LAPACK and MUMPS, the
positive-definiteness test, and the fall-back to MUMPS LDLᵀ for saddles."""

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp

from hpcvib.errors import HpcvibError
from hpcvib.linalg.hessian import assemble_hessian
from hpcvib.linalg.solvers import cholmod
from hpcvib.linalg.spectral import log_pseudo_determinant

from conftest import fe_vacancy_saddle, relaxed_fe_vacancy, serial_only

pytestmark = pytest.mark.skipif(not cholmod.available(), reason="CHOLMOD library not available")


def _laplacian_3d(n, shift):
    """Sparse 3-D periodic 7-point Laplacian + shift·I (n³ × n³), symmetric."""
    one = sp.diags([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1], format="lil")
    one[0, n - 1] = one[n - 1, 0] = -1
    eye = sp.identity(n)
    lap = (sp.kron(sp.kron(one, eye), eye) + sp.kron(sp.kron(eye, one), eye)
           + sp.kron(sp.kron(eye, eye), one))
    return (lap + shift * sp.identity(n ** 3)).tocsc()


@serial_only()
@pytest.mark.parametrize("ordering", ["nesdis", "metis", "amd"])
def test_log_determinant_matches_lapack(ordering):
    rng = np.random.default_rng(1)
    a = _laplacian_3d(9, 0.3)
    a = a + sp.diags(rng.uniform(0, 1, a.shape[0]))  # break the symmetry of the spectrum
    res = cholmod.cholesky_logdet(a, ordering=ordering)
    sign, ref = np.linalg.slogdet(a.toarray())
    assert res.positive_definite and sign > 0
    assert res.ln_det == pytest.approx(ref, rel=1e-12)


@serial_only()
def test_indefinite_matrix_is_detected():
    a = _laplacian_3d(6, 0.0)
    lowest_nonzero = 2 - 2 * np.cos(2 * np.pi / 6)  # analytic spectrum of the periodic Laplacian
    res = cholmod.cholesky_logdet(a - sp.identity(a.shape[0]) * (0.5 * lowest_nonzero))
    assert not res.positive_definite and res.minor < res.n


def test_fe_vacancy_cholmod_mumps_and_dense_agree(comm):
    atoms = relaxed_fe_vacancy(4)
    dh = assemble_hessian(comm, atoms, "Fe_mm")
    mumps = log_pseudo_determinant(dh, solver="mumps")
    D = dh.gather_scipy(mass_weighted=True)
    if comm.size == 1:
        for k in (0, 77):
            chol = log_pseudo_determinant(dh, pinned_atom=k, solver="cholmod")
            assert chol.factorisation.solver == "cholmod" and chol.n_negative == 0
            assert chol.ln_det_prime == pytest.approx(mumps.ln_det_prime, rel=1e-12)
        ev = np.sort(np.abs(scipy.linalg.eigvalsh(D.toarray())))[3:]
        assert chol.ln_det_prime == pytest.approx(np.sum(np.log(ev)), rel=1e-10)
    else:
        with pytest.raises(HpcvibError, match="one process"):
            log_pseudo_determinant(dh, solver="cholmod")
        assert log_pseudo_determinant(dh).factorisation.solver == "mumps"


@serial_only()
def test_saddle_falls_back_to_mumps_inertia(comm):
    dh = assemble_hessian(comm, fe_vacancy_saddle(4), "Fe_mm")
    pd = log_pseudo_determinant(dh, solver="cholmod")
    assert pd.n_negative == 1 and pd.factorisation.solver == "mumps"
    assert pd.ln_det_prime == pytest.approx(log_pseudo_determinant(dh, solver="mumps").ln_det_prime, rel=1e-12)


@serial_only()
def test_not_positive_definite_prints_nothing(capfd):
    a = _laplacian_3d(5, -1.0)
    assert not cholmod.cholesky_logdet(a).positive_definite
    out, err = capfd.readouterr()
    assert out == "" and err == ""
