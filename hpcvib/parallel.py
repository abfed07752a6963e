"""MPI helpers: communicators are always passed explicitly; COMM_WORLD appears at the CLI edge only.

The rule that keeps jobs from deadlocking: never put a collective behind a rank test. Work that
only the root does runs through :func:`root_only`, which broadcasts the result *or the exception*
so that a failure on rank 0 is raised on every rank (PyOP2 ``safe_noncollective`` style).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


class _RemoteFailure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def root_only(comm, func: Callable[..., Any], *args, root: int = 0, **kwargs) -> Any:
    """Run ``func`` on ``root`` and broadcast its result; re-raise its exception on all ranks."""
    result: Any = None
    if comm.rank == root:
        try:
            result = func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 — re-raised on every rank below
            result = _RemoteFailure(exc)
    result = comm.bcast(result, root=root)
    if isinstance(result, _RemoteFailure):
        raise result.exc
    return result


def collective_call(comm, func: Callable[..., Any], *args, **kwargs) -> Any:
    """Run ``func`` on every rank; if any rank raises, every rank raises the first error.

    Use around rank-local work that precedes a collective, so a failure on one rank cannot leave
    the others waiting.
    """
    error: BaseException | None = None
    result = None
    try:
        result = func(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 — re-raised collectively below
        error = exc
    errors = comm.allgather(error)
    for exc in errors:
        if exc is not None:
            raise exc
    return result


def allreduce_sum(comm, array: np.ndarray) -> np.ndarray:
    """Element-wise sum of a float or int array over ``comm`` (returns a new array)."""
    from mpi4py import MPI

    array = np.ascontiguousarray(array)
    out = np.empty_like(array)
    comm.Allreduce(array, out, op=MPI.SUM)
    return out


def world():
    """``MPI.COMM_WORLD`` — for the CLI edge and tests only."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def self_comm():
    """``MPI.COMM_SELF``."""
    from mpi4py import MPI

    return MPI.COMM_SELF
