"""Import petsc4py/slepc4py wherever they live.

Cluster installs (spack, modules, ``pip install petsc4py``) put them on ``sys.path`` and set
PETSC_DIR/SLEPC_DIR. Debian/Ubuntu's ``python3-petsc4py`` installs them under
``/usr/lib/petscdir/petscX.Y/<arch>`` and finds them through ``/usr/lib/petsc`` — a link that only
the ``-dev`` packages create. When the plain import fails we look there, set PETSC_DIR/SLEPC_DIR
and extend ``sys.path``, so the runtime packages alone are enough. Keep PETSc imports inside the
modules that need them: structures, potentials and descriptors work without PETSc.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys

_INITIALISED = False


def _debian_dir(kind: str) -> str | None:
    """Newest Debian ``/usr/lib/{kind}dir/{kind}X.Y/<arch>-real`` folder, if any."""
    hits = sorted(glob.glob(f"/usr/lib/{kind}dir/{kind}*/*-real"))
    return hits[-1] if hits else None


def _ensure_path(kind: str, env: str) -> None:
    try:
        __import__(f"{kind}4py")
        return
    except ImportError:
        pass
    base = os.environ.get(env)
    if not base or not os.path.isdir(os.path.join(base, "lib", "python3", "dist-packages")):
        base = _debian_dir(kind)
    if base is None:
        raise ImportError(f"{kind}4py not found: install it (Debian: apt-get install python3-{kind}4py; "
                          f"cluster: pip install {kind}4py with {env} set)")
    os.environ.setdefault(env, base)
    path = os.path.join(base, "lib", "python3", "dist-packages")
    if path not in sys.path:
        sys.path.append(path)


def init_petsc(args: list[str] | None = None):
    """Import and initialise petsc4py (once) and return the ``PETSc`` module."""
    global _INITIALISED
    _ensure_path("petsc", "PETSC_DIR")
    import petsc4py

    if not _INITIALISED:
        petsc4py.init(args if args is not None else [sys.argv[0]])
        _INITIALISED = True
    from petsc4py import PETSc

    return PETSc


def init_slepc():
    """Import and initialise slepc4py (after PETSc) and return the ``SLEPc`` module."""
    init_petsc()
    _ensure_path("slepc", "SLEPC_DIR")
    import slepc4py

    slepc4py.init()
    from slepc4py import SLEPc

    return SLEPc


def petsc_options(options: str | None) -> None:
    """Insert a PETSc option string (``"-mat_mumps_icntl_7 7 -log_view"``) into the database."""
    if not options:
        return
    PETSc = init_petsc()
    opts = PETSc.Options()
    words = options.split()
    k = 0
    while k < len(words):
        key = words[k].lstrip("-")
        if k + 1 < len(words) and not words[k + 1].startswith("-"):
            opts[key] = words[k + 1]
            k += 2
        else:
            opts[key] = ""
            k += 1


def finalize_collectively(comm) -> None:
    """Finalise SLEPc and PETSc now, on every rank of ``comm`` together (call collectively at the
    end of a program). Left to the interpreter's exit handlers, PETSc 3.18's finalisation runs a
    garbage clean-up whose communicator duplication is collective, at a moment that differs
    between ranks (a rank may already be inside MPI_Finalize): measured to hang 2-rank task-farm
    runs with Open MPI 4.1. After this call the exit handlers find PETSc finalised and skip."""
    import gc

    petsc = sys.modules.get("petsc4py.PETSc")
    if petsc is None or petsc.Sys.isFinalized():
        return
    gc.collect()
    comm.Barrier()
    slepc = sys.modules.get("slepc4py.SLEPc")
    if slepc is not None:
        slepc._finalize()
    petsc._pre_finalize()
    petsc._finalize()


_EVENTS: dict = {}


@contextlib.contextmanager
def log_event(name: str):
    """A PETSc log event around a phase of hpcvib (``-log_view`` then lists hpcvib's assembly,
    factorisation and eigensolve times beside PETSc's own); a no-op while PETSc is not
    initialised (dense and CHOLMOD routes never start it). Not collective."""
    petsc = sys.modules.get("petsc4py.PETSc")
    if petsc is None:
        yield
        return
    event = _EVENTS.get(name)
    if event is None:
        event = _EVENTS[name] = petsc.Log.Event(name)
    event.begin()
    try:
        yield
    finally:
        event.end()
