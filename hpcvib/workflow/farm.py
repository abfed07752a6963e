"""MPI task farming: rank groups take tasks one at a time from a shared counter.

``comm`` is split into groups of ``group_size`` consecutive ranks. Each group's leader takes the
next task index with an atomic ``MPI_Fetch_and_op`` on a two-integer window held by rank 0
(``next``, ``done``) — passive-target RMA, so no rank is spent as a manager and a group that draws
cheap tasks simply takes more of them (dynamic load balance: defect relaxations differ in cost by
an order of magnitude). The index is broadcast inside the group, which runs the task on its own
communicator (its own PETSc objects). Task results must depend only on the task, so they are
identical on any number of groups; rank 0 logs progress and an ETA.

A task raises only for bugs: expected failures (non-convergence, wrong inertia) are recorded by
the task itself. An unexpected exception in one group would leave the others waiting at the final
barrier, so it is logged with its task and the whole job is aborted (``comm.Abort``) unless
there is only one group, in which case it propagates normally.
"""

from __future__ import annotations

import gc
import sys
import time
import traceback
from typing import Callable, Sequence

import numpy as np

from hpcvib.errors import InputError
from hpcvib.log import get_logger


_GROUPS: dict = {}


def split_groups(comm, group_size: int):
    """Sub-communicator of consecutive ranks of size ``group_size`` (the last may be smaller)
    and the number of groups. Created once per (comm, size) and kept for the life of the process:
    PETSc attaches its own inner communicator to every communicator it sees and refers to it again
    in PetscFinalize, so a group communicator must not be freed while PETSc is alive."""
    if group_size < 1:
        raise InputError(f"group_size must be >= 1, got {group_size}")
    group_size = min(group_size, comm.size)
    key = (comm.py2f(), group_size)
    if key not in _GROUPS:
        _GROUPS[key] = comm.Split(color=comm.rank // group_size, key=comm.rank)
    return _GROUPS[key], -(-comm.size // group_size)


class _Counter:
    """Two int64 counters on rank 0 of ``comm``, updated with atomic fetch-and-add."""

    def __init__(self, comm):
        from mpi4py import MPI

        self._MPI = MPI
        self.win = MPI.Win.Allocate(16 if comm.rank == 0 else 0, 8, comm=comm)
        if comm.rank == 0:
            np.frombuffer(self.win.tomemory(), dtype=np.int64)[:] = 0
        comm.Barrier()
        self._one = np.ones(1, dtype=np.int64)
        self._out = np.zeros(1, dtype=np.int64)

    def fetch_add(self, slot: int) -> int:
        MPI = self._MPI
        self.win.Lock(0, MPI.LOCK_SHARED)
        self.win.Fetch_and_op(self._one, self._out, 0, slot, MPI.SUM)
        self.win.Unlock(0)
        return int(self._out[0])

    def free(self):
        self.win.Free()


def initialise_petsc_everywhere() -> None:
    """Initialise PETSc and SLEPc on every rank (call collectively, before any group uses them).
    Their finalisation at exit is collective over COMM_WORLD: a rank that never initialised
    SLEPc while another did leaves the job hanging in PetscFinalize (measured with Open MPI 4.1,
    PETSc/SLEPc 3.18) — and which groups need an eigensolver depends on the tasks they draw."""
    from hpcvib.linalg.petsc_env import init_petsc, init_slepc

    init_petsc()
    init_slepc()


def release_petsc_garbage(group) -> None:
    """Destroy the PETSc objects that Python's GC handed to PETSc's delayed-destroy list on
    ``group`` (petsc4py >= 3.18 defers collective destroys). Without it, each task's matrices and
    factors accumulate (GBs over a stage), and the leftovers on a freed group communicator make
    PetscFinalize hang on the ranks that hold them. Collective over ``group``."""
    gc.collect()
    petsc = sys.modules.get("petsc4py.PETSc")
    if petsc is not None:
        petsc.garbage_cleanup(group)


def release_all_petsc_garbage(comm) -> None:
    """Collectively destroy PETSc's delayed-destroy garbage on ``comm`` and on every group
    communicator made from it — call on all ranks before exit. petsc4py's own clean-up at exit
    runs only on the ranks that still hold garbage, and it is collective: leftovers on some ranks
    hang the job in PetscFinalize."""
    gc.collect()
    petsc = sys.modules.get("petsc4py.PETSc")
    if petsc is None:
        return
    for (parent, _), group in sorted(_GROUPS.items()):
        if parent == comm.py2f():
            petsc.garbage_cleanup(group)
    petsc.garbage_cleanup(comm)


def run_tasks(comm, tasks: Sequence, work: Callable, group_size: int = 1, what: str = "tasks") -> int:
    """Run ``work(group_comm, task)`` once for every task; returns the number this rank's group ran.

    Collective over ``comm``.
    """
    log = get_logger("farm")
    initialise_petsc_everywhere()
    n = len(tasks)
    group, n_groups = split_groups(comm, group_size)
    counter = _Counter(comm)
    log.info("%s: %d to do on %d group(s) of %d rank(s)", what, n, n_groups, group.size)
    t0 = time.perf_counter()
    mine = 0
    # The objects that exist now (the database's cached attributes: ~10⁶ in a long job) are left
    # out of the collections after each task: those then scan only what tasks made (86 ms per
    # task before, no longer visible in the profile of a 1024-atom Fe job).
    gc.collect()
    gc.freeze()
    try:
        while True:
            index = counter.fetch_add(0) if group.rank == 0 else None
            index = group.bcast(index, root=0)
            if index >= n:
                break
            try:
                work(group, tasks[index])
                release_petsc_garbage(group)
            except Exception:  # noqa: BLE001
                if n_groups > 1:
                    log.critical("%s: task %r failed on world rank %d, aborting the job:\n%s", what,
                                 tasks[index], comm.rank, traceback.format_exc())
                    comm.Abort(1)
                raise
            mine += 1
            if group.rank == 0:
                done = counter.fetch_add(1) + 1
                if comm.rank == 0:
                    elapsed = time.perf_counter() - t0
                    eta = elapsed / done * (n - done)
                    log.info("%s: %d/%d done, %.1f s elapsed, ETA %.0f s", what, done, n, elapsed, eta)
    finally:
        gc.unfreeze()
        counter.free()  # collective: with one group every rank got here the same way
    return mine
