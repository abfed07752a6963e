"""Exceptions with messages meant for the user (the CLI prints them on one line, exit code 2)."""


class HpcvibError(Exception):
    """Base class of errors that the CLI reports without a traceback."""


class InputError(HpcvibError):
    """Bad user input: an unreadable file, a malformed potential, an unphysical structure."""


class ConvergenceError(HpcvibError):
    """An iterative solver (SLEPc, optimiser, saddle search) did not converge."""


class NotAMinimumError(InputError):
    """A structure expected to be a minimum (or first-order saddle) has the wrong inertia."""


class SomeItemsFailed(HpcvibError):
    """A batch command run with ``--keep-going`` processed every good item, but some failed
    (each reported with its reason); the CLI exits with status 3."""

    exit_status = 3
