"""MPI helpers: the thread share of a rank, and errors raised collectively."""

import os

import numba
import pytest
from mpi4py import MPI

from hpcvib.parallel import collective_call, limit_numba_threads, root_only, threads_per_rank


def test_threads_per_rank_never_oversubscribe_the_node(comm):
    """Ranks on one node together use at most its cores (or one thread each when there are more
    ranks than cores); a rank bound to a core set uses that set."""
    n = threads_per_rank(comm)
    assert n >= 1
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    total = node.allreduce(n)
    cores = os.cpu_count()
    node.Free()
    assert total <= max(cores, comm.size)
    if hasattr(os, "sched_getaffinity"):
        assert n <= len(os.sched_getaffinity(0))


def test_limit_numba_threads_respects_the_user_and_restores(comm, monkeypatch):
    before = numba.get_num_threads()
    try:
        monkeypatch.setenv("NUMBA_NUM_THREADS", str(before))
        assert limit_numba_threads(comm) == before  # the user's choice stands
        monkeypatch.delenv("NUMBA_NUM_THREADS")
        n = limit_numba_threads(comm)
        assert n == numba.get_num_threads() == min(threads_per_rank(comm), numba.config.NUMBA_NUM_THREADS)
    finally:
        numba.set_num_threads(before)


def test_errors_are_raised_on_every_rank(comm):
    def fail_on_root():
        if comm.rank == 0:
            raise RuntimeError("root failed")
        return 1

    with pytest.raises(RuntimeError, match="root failed"):
        collective_call(comm, fail_on_root)
    with pytest.raises(RuntimeError, match="root failed"):
        root_only(comm, fail_on_root)
