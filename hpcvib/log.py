"""Rank-aware logging: rank 0 logs at the chosen level, other ranks at WARNING.

Every line carries the rank (``[r0/2]``) and the elapsed wall time, and goes to stderr so
that ``--json`` output on stdout stays machine readable (Dedalus/Firedrake style).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

LOGGER_NAME = "hpcvib"
_T0 = time.perf_counter()


class _RankFormatter(logging.Formatter):
    def __init__(self, rank: int, size: int):
        super().__init__()
        self.tag = f"r{rank}/{size}"

    def format(self, record: logging.LogRecord) -> str:
        elapsed = time.perf_counter() - _T0
        return f"[{elapsed:8.2f}s {self.tag}] {record.levelname[0]} {record.getMessage()}"


def get_logger(name: str | None = None) -> logging.Logger:
    """Logger of the hpcvib hierarchy (``hpcvib.<name>``)."""
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


def setup_logging(comm, verbosity: int = 0) -> logging.Logger:
    """Configure the ``hpcvib`` logger for this rank.

    Parameters
    ----------
    comm : mpi4py communicator whose rank decides the level.
    verbosity : -1 quiet (warnings), 0 info, 1 debug; ranks other than 0 log warnings only.
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    if comm.rank != 0:
        level = logging.WARNING
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RankFormatter(comm.rank, comm.size))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


@contextlib.contextmanager
def timed(what: str, timings: dict | None = None, logger: logging.Logger | None = None):
    """Time a block; log ``what: X s`` and store it in ``timings[what]`` when given."""
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    if timings is not None:
        timings[what] = timings.get(what, 0.0) + seconds
    (logger or get_logger()).info("%s: %.3f s", what, seconds)


@contextlib.contextmanager
def per_task_detail_at_debug(*names: str):
    """Inside a task farm, log the per-structure lines of these loggers (``hessian``,
    ``spectral``, ...) at DEBUG only, unless debug logging is on: the farm logs progress."""
    loggers = [get_logger(n) for n in names]
    verbose = get_logger().getEffectiveLevel() <= logging.DEBUG
    saved = [lg.level for lg in loggers]
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved):
            lg.setLevel(level)
