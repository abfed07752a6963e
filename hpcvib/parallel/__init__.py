"""MPI helpers: communicators are always passed explicitly; COMM_WORLD appears at the CLI edge only.

The rule that keeps jobs from deadlocking: never put a collective behind a rank test. Work that
only the root does runs through :func:`root_only`, which broadcasts the result *or the exception*
so that a failure on rank 0 is raised on every rank (PyOP2 ``safe_noncollective`` style).
"""

from __future__ import annotations

import os
from typing import Any, Callable


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
        raise _on_every_rank(result.exc)
    return result


def _on_every_rank(exc: BaseException) -> BaseException:
    """Mark an exception that every rank of the communicator raises (the CLI then reports it
    once and ends all ranks together instead of aborting)."""
    try:
        exc.raised_on_every_rank = True
    except AttributeError:  # some built-in exceptions take no attributes
        pass
    return exc


def raised_on_every_rank(exc: BaseException) -> bool:
    """Whether ``exc`` came through :func:`root_only` or :func:`collective_call`."""
    return bool(getattr(exc, "raised_on_every_rank", False))


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
            raise _on_every_rank(exc)
    return result



def threads_per_rank(comm) -> int:
    """Threads a rank may use without oversubscribing its node.

    A rank that the launcher bound to a set of cores (``srun --cpus-per-task``, ``mpirun
    --bind-to``) uses that set; an unbound rank gets the node's cores divided among the ranks
    that share the node (``comm`` split by ``MPI.COMM_TYPE_SHARED``). Collective."""
    from mpi4py import MPI

    total = os.cpu_count() or 1
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return allowed if allowed < total else max(1, total // node.size)
    finally:
        node.Free()


def limit_numba_threads(comm) -> int:
    """Give each rank's numba kernels its share of the node's cores unless the user chose
    (``NUMBA_NUM_THREADS`` set). Without it every rank starts one thread per core, and MPI ranks
    on one node oversubscribe it: small kernels (forces of a few hundred atoms, called thousands of
    times in saddle searches) then run several times slower. Collective; returns the count."""
    import numba

    if "NUMBA_NUM_THREADS" in os.environ:
        return numba.get_num_threads()
    n = min(threads_per_rank(comm), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    return n
