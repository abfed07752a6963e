"""Supernodal sparse Cholesky (CHOLMOD) with nested-dissection ordering — one-process backend
for exact log-determinants of positive-definite D_(-k) (THEORY §3).

Debian's MUMPS has only local fill-reducing orderings (AMD, AMF, QAMD, PORD). CHOLMOD's
supernodal LLᵀ with a METIS-based nested dissection (``nesdis``) factors the EAM dynamical
matrix of a 16 000-atom bcc Fe cell ~5× faster than MUMPS+PORD on the same core (bench/), and
it is a run-time dependency of Debian's PETSc, so nothing extra is installed. It is used
through ctypes from the shared library ``libcholmod.so.3``; the few fields of
``cholmod_common`` that are set or read are at offsets computed from ``cholmod_core.h`` of
CHOLMOD 3.0 (SuiteSparse 5.x) and the library version is checked before use, so another
CHOLMOD is refused (then MUMPS is used), never misread.

Scope: one process (the matrix is gathered on the rank that factors), positive-definite
matrices. A Cholesky factorisation either succeeds — then every eigenvalue is positive, an
exact inertia count of 0 — or stops at the first non-positive pivot (``minor < n``); the caller
then falls back to MUMPS LDLᵀ, which counts the negative eigenvalues (saddles).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from dataclasses import dataclass

import numpy as np

from hpcvib.errors import HpcvibError

#: CHOLMOD ordering codes (cholmod_core.h).
ORDERINGS = {"amd": 2, "metis": 3, "nesdis": 4}
DEFAULT_ORDERING = "nesdis"

_LIBRARY_NAMES = ("libcholmod.so.3", "cholmod")
_SUPPORTED_MAJOR = 3
# Byte offsets in cholmod_common and cholmod_factor of CHOLMOD 3.0.x, x86-64 (offsetof).
_COMMON_SIZE = 2664
_COMMON = {"print": 144, "supernodal": 48, "nmethods": 168, "method": 184, "method_size": 168,
           "method_ordering": 132, "status": 1972, "fl": 1976, "lnz": 1984, "memory_usage": 2016}
_FACTOR = {"n": 0, "minor": 8, "x": 64, "nsuper": 104, "xsize": 120, "super": 144, "pi": 152,
           "px": 160, "ordering": 176, "is_ll": 180, "is_super": 184}
_CHOLMOD_SUPERNODAL = 2
#: peak memory of a supernodal factorisation ≈ FACTOR_OVERHEAD × (8 bytes × factor values) +
#: FACTOR_BASE_MB (workspace, indices): measured peak / (8·xsize) = 1.97, 1.78, 1.57, 1.43 on Fe
#: vacancy cells of 431, 1 023, 1 999, 3 455 atoms (falling with size), so the estimate is an
#: upper bound from a few hundred atoms on
FACTOR_OVERHEAD = 1.5
FACTOR_BASE_MB = 20
_CHOLMOD_LONG, _CHOLMOD_REAL, _CHOLMOD_DOUBLE = 2, 1, 0


class _Sparse(ctypes.Structure):
    """cholmod_sparse (stable layout since CHOLMOD 1.x)."""

    _fields_ = [("nrow", ctypes.c_size_t), ("ncol", ctypes.c_size_t), ("nzmax", ctypes.c_size_t),
                ("p", ctypes.c_void_p), ("i", ctypes.c_void_p), ("nz", ctypes.c_void_p),
                ("x", ctypes.c_void_p), ("z", ctypes.c_void_p), ("stype", ctypes.c_int),
                ("itype", ctypes.c_int), ("xtype", ctypes.c_int), ("dtype", ctypes.c_int),
                ("sorted", ctypes.c_int), ("packed", ctypes.c_int)]


_LIB = None
_UNAVAILABLE = None


def _load():
    """The CHOLMOD shared library with argument types set, or None (reason in _UNAVAILABLE)."""
    global _LIB, _UNAVAILABLE
    if _LIB is not None or _UNAVAILABLE is not None:
        return _LIB
    lib = None
    for name in _LIBRARY_NAMES:
        path = name if name.startswith("lib") else ctypes.util.find_library(name)
        if not path:
            continue
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError:
            continue
    if lib is None:
        _UNAVAILABLE = "libcholmod.so.3 not found (Debian: libcholmod3, a dependency of PETSc)"
        return None
    version = (ctypes.c_int * 3)()
    lib.cholmod_l_version(version)
    if version[0] != _SUPPORTED_MAJOR:
        _UNAVAILABLE = (f"CHOLMOD {version[0]}.{version[1]}.{version[2]} found; this binding knows "
                        f"the layout of CHOLMOD {_SUPPORTED_MAJOR}.x only")
        return None
    lib.cholmod_l_start.argtypes = [ctypes.c_void_p]
    lib.cholmod_l_finish.argtypes = [ctypes.c_void_p]
    lib.cholmod_l_analyze.restype = ctypes.c_void_p
    lib.cholmod_l_analyze.argtypes = [ctypes.POINTER(_Sparse), ctypes.c_void_p]
    lib.cholmod_l_factorize.restype = ctypes.c_int
    lib.cholmod_l_factorize.argtypes = [ctypes.POINTER(_Sparse), ctypes.c_void_p, ctypes.c_void_p]
    lib.cholmod_l_free_factor.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
    _LIB = lib
    return lib


def available() -> bool:
    """True when a supported CHOLMOD library can be used in this process."""
    return _load() is not None


def unavailable_reason() -> str:
    _load()
    return _UNAVAILABLE or ""


@dataclass
class CholeskyResult:
    """ln det A of a symmetric positive-definite A, or where the factorisation stopped."""

    positive_definite: bool
    ln_det: float
    minor: int
    n: int
    ordering: str
    analyse_seconds: float
    factor_seconds: float
    gflop: float
    factor_entries: int
    peak_mb: int
    estimated_mb: int = 0
    factored: bool = True


def _int_at(buf, offset: int) -> ctypes.c_int:
    return ctypes.c_int.from_buffer(buf, offset)


def _factor_diagonal(factor: int, n: int) -> np.ndarray:
    """Diagonal of a supernodal LLᵀ factor: supernode s holds columns super[s]..super[s+1]-1
    as a column-major (pi[s+1]-pi[s]) × ncols block at x[px[s]:], diagonal on top."""
    def size_t(key):
        return ctypes.c_size_t.from_address(factor + _FACTOR[key]).value

    def array(key, ctype, length):
        ptr = ctypes.c_void_p.from_address(factor + _FACTOR[key]).value
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctype)), (length,))

    nsuper = size_t("nsuper")
    sup = array("super", ctypes.c_int64, nsuper + 1)
    pi = array("pi", ctypes.c_int64, nsuper + 1)
    px = array("px", ctypes.c_int64, nsuper + 1)
    x = array("x", ctypes.c_double, size_t("xsize"))
    ncols, nrows = np.diff(sup), np.diff(pi)
    snode = np.repeat(np.arange(nsuper), ncols)
    local = np.arange(n) - sup[snode]
    return x[px[snode] + local * nrows[snode] + local].copy()


def cholesky_logdet(matrix, ordering: str = DEFAULT_ORDERING, memory_limit_mb: float | None = None) -> CholeskyResult:
    """ln det of the symmetric scipy sparse ``matrix`` by supernodal Cholesky (one process).

    ``ordering``: ``nesdis`` (CHOLMOD's nested dissection, METIS separators; default),
    ``metis`` (METIS_NodeND) or ``amd``. Not positive definite: ``positive_definite`` False and
    ``minor`` the column where it stopped. The symbolic analysis gives the size of the
    supernodal factor before any numerical work: when it exceeds ``memory_limit_mb`` nothing is
    factored (``factored`` False, ``estimated_mb`` the need).
    """
    import scipy.sparse as sp

    lib = _load()
    if lib is None:
        raise HpcvibError(f"CHOLMOD backend unavailable: {_UNAVAILABLE}")
    if ordering not in ORDERINGS:
        raise HpcvibError(f"unknown CHOLMOD ordering {ordering!r} (choose from {', '.join(ORDERINGS)})")
    lower = sp.tril(matrix, format="csc")
    lower.sum_duplicates()
    lower.sort_indices()
    n = lower.shape[0]
    indptr = np.ascontiguousarray(lower.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(lower.indices, dtype=np.int64)
    data = np.ascontiguousarray(lower.data, dtype=np.float64)
    a = _Sparse(n, n, len(data), indptr.ctypes.data, indices.ctypes.data, None, data.ctypes.data,
                None, -1, _CHOLMOD_LONG, _CHOLMOD_REAL, _CHOLMOD_DOUBLE, 1, 1)
    common = (ctypes.c_char * (2 * _COMMON_SIZE))()
    lib.cholmod_l_start(common)
    factor = ctypes.c_void_p(None)
    try:
        _int_at(common, _COMMON["print"]).value = 0  # no messages on stdout (it carries JSON)
        _int_at(common, _COMMON["supernodal"]).value = _CHOLMOD_SUPERNODAL
        _int_at(common, _COMMON["nmethods"]).value = 1
        _int_at(common, _COMMON["method"] + _COMMON["method_ordering"]).value = ORDERINGS[ordering]
        t0 = time.perf_counter()
        factor.value = lib.cholmod_l_analyze(ctypes.byref(a), common)
        t1 = time.perf_counter()
        if not factor.value:
            raise HpcvibError(f"CHOLMOD analysis failed (status {_int_at(common, _COMMON['status']).value})")
        xsize = ctypes.c_size_t.from_address(factor.value + _FACTOR["xsize"]).value
        estimated_mb = int(FACTOR_OVERHEAD * 8 * xsize / 2 ** 20 + FACTOR_BASE_MB)
        if memory_limit_mb is not None and estimated_mb > memory_limit_mb:
            return CholeskyResult(False, np.nan, 0, n, ordering, t1 - t0, 0.0,
                                  ctypes.c_double.from_buffer(common, _COMMON["fl"]).value / 1e9,
                                  int(ctypes.c_double.from_buffer(common, _COMMON["lnz"]).value), 0,
                                  estimated_mb, False)
        ok = lib.cholmod_l_factorize(ctypes.byref(a), factor, common)
        t2 = time.perf_counter()
        status = _int_at(common, _COMMON["status"]).value
        if not ok or status < 0:  # negative status: out of memory or invalid input
            raise HpcvibError(f"CHOLMOD factorisation failed (status {status})")
        minor = ctypes.c_size_t.from_address(factor.value + _FACTOR["minor"]).value
        is_super = ctypes.c_int.from_address(factor.value + _FACTOR["is_super"]).value
        positive = minor >= n
        ln_det = np.nan
        if positive:
            if not is_super:
                raise HpcvibError("CHOLMOD returned a simplicial factor; supernodal was requested")
            ln_det = 2.0 * float(np.sum(np.log(_factor_diagonal(factor.value, n))))
        return CholeskyResult(positive, ln_det, int(minor), n, ordering, t1 - t0, t2 - t1,
                              ctypes.c_double.from_buffer(common, _COMMON["fl"]).value / 1e9,
                              int(ctypes.c_double.from_buffer(common, _COMMON["lnz"]).value),
                              int(ctypes.c_size_t.from_buffer(common, _COMMON["memory_usage"]).value / 2 ** 20),
                              estimated_mb)
    finally:
        if factor.value:
            lib.cholmod_l_free_factor(ctypes.byref(factor), common)
        lib.cholmod_l_finish(common)
