"""Writing sparse matrices: scipy ``.npz``, Matrix Market ``.mtx``, PETSc binary (``.petsc``,
``.bin``, ``.dat``), chosen by suffix. Files are written to a temporary name and renamed, so a
reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import gc
import sys

import numpy as np
import scipy.io
import scipy.sparse as sp

from hpcvib.errors import InputError
from hpcvib.fileio import atomic_output

PETSC_MAT_CLASSID = 1211216
SUFFIXES = (".npz", ".mtx", ".petsc", ".bin", ".dat")


def matrix_format(path: str) -> str:
    """``npz``, ``mtx`` or ``petsc`` from the file name; InputError otherwise."""
    lower = path.lower()
    if lower.endswith(".npz"):
        return "npz"
    if lower.endswith(".mtx"):
        return "mtx"
    if lower.endswith((".petsc", ".bin", ".dat")):
        return "petsc"
    raise InputError(f"{path}: unknown matrix format (use one of {', '.join(SUFFIXES)})")


def write_matrix(path: str, matrix: sp.spmatrix, comment: str = "") -> None:
    """Write ``matrix`` atomically in the format given by the suffix of ``path``."""
    fmt = matrix_format(path)
    csr = sp.csr_matrix(matrix)
    csr.sort_indices()
    with atomic_output(path) as tmp:
        if fmt == "npz":
            failure = None
            with _silent_unraisable():  # a failed write is raised once, not again from ZipFile.__del__
                try:
                    sp.save_npz(tmp, csr, compressed=False)
                except OSError as exc:
                    failure = (exc.errno, exc.strerror or str(exc))
                gc.collect()
            if failure:
                raise OSError(*failure)
        elif fmt == "mtx":
            # through a Python file object: scipy's native writer, given a path, does not report
            # a full disk (it left a file cut mid-line and returned normally)
            with open(tmp, "wb") as fh:
                scipy.io.mmwrite(fh, csr, comment=comment, precision=17)
        else:
            write_petsc_binary(tmp, csr)


@contextlib.contextmanager
def _silent_unraisable():
    """Drop 'Exception ignored in __del__' reports (the error itself propagates normally)."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


def write_petsc_binary(path: str, csr: sp.csr_matrix) -> None:
    """PETSc binary matrix format (big-endian; 32-bit indices): MatLoad reads it as AIJ
    (``-matload_block_size 3`` for BAIJ)."""
    m, n = csr.shape
    if csr.nnz >= 2**31:
        raise InputError(f"{path}: matrix has {csr.nnz} non-zeros, too many for 32-bit PETSc binary")
    with open(path, "wb") as fh:
        np.array([PETSC_MAT_CLASSID, m, n, csr.nnz], dtype=">i4").tofile(fh)
        np.diff(csr.indptr).astype(">i4").tofile(fh)
        csr.indices.astype(">i4").tofile(fh)
        csr.data.astype(">f8").tofile(fh)


def read_petsc_binary(path: str) -> sp.csr_matrix:
    """Read a matrix written by :func:`write_petsc_binary` (or PETSc, 32-bit indices)."""
    with open(path, "rb") as fh:
        header = np.fromfile(fh, dtype=">i4", count=4)
        if len(header) != 4 or header[0] != PETSC_MAT_CLASSID:
            raise InputError(f"{path}: not a PETSc binary matrix")
        m, n, nnz = (int(v) for v in header[1:])
        lengths = np.fromfile(fh, dtype=">i4", count=m)
        indices = np.fromfile(fh, dtype=">i4", count=nnz)
        data = np.fromfile(fh, dtype=">f8", count=nnz)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix((data.astype(float), indices.astype(np.int64), indptr), shape=(m, n))


def read_matrix(path: str) -> sp.csr_matrix:
    """Read a matrix written by :func:`write_matrix`."""
    fmt = matrix_format(path)
    if fmt == "npz":
        return sp.load_npz(path).tocsr()
    if fmt == "mtx":
        return sp.csr_matrix(scipy.io.mmread(path))
    return read_petsc_binary(path)
