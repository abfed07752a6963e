"""Per-item error handling of batch commands (``thermo``, ``prefactor``, ``descriptors``,
``predict`` with ``--keep-going``): every good structure is processed, every bad one is reported
once with its reason (a JSON line ``{"structure", "status": "failed", "error"}`` with ``--json``,
else one line on stderr), and the command ends with :class:`~hpcvib.errors.SomeItemsFailed`
(exit status 3). Without ``--keep-going`` the first error ends the command (exit status 2).

Ranks agree on each item's outcome (one small allgather per item), so an error raised on some
ranks only still leaves every rank at the same item.
"""

from __future__ import annotations

import json
import sys

from hpcvib.errors import HpcvibError, SomeItemsFailed


class ItemFailures:
    """Runs one item at a time and collects the failures.

    Parameters
    ----------
    comm : mpi4py communicator the items are processed on (collective methods).
    keep_going : go on after an item fails (else re-raise its error).
    json_lines : report a failure as a JSON line on stdout instead of a line on stderr.
    """

    def __init__(self, comm, keep_going: bool, json_lines: bool = False):
        self.comm = comm
        self.keep_going = keep_going
        self.json_lines = json_lines
        self.failed: list[tuple[str, str]] = []
        self.total = 0

    def run(self, label: str, func):
        """``(func(), True)``, or ``(None, False)`` after recording the item's failure. Collective
        when ``keep_going``."""
        self.total += 1
        if not self.keep_going:
            return func(), True
        result, message = None, None
        try:
            result = func()
        except HpcvibError as exc:
            message = str(exc)
        messages = [m for m in self.comm.allgather(message) if m is not None]
        if not messages:
            return result, True
        self.record(label, messages[0], counted=True)
        return None, False

    def record(self, label: str, message: str, counted: bool = False) -> None:
        """Report a failed item (rank 0 prints)."""
        if not counted:
            self.total += 1
        self.failed.append((label, message))
        if self.comm.rank != 0:
            return
        if self.json_lines:
            print(json.dumps({"structure": label, "status": "failed", "error": message}), flush=True)
        else:
            print(f"hpcvib: {label}: failed: {message}", file=sys.stderr, flush=True)

    def good(self, items):
        """The items of ``items`` ((label, value) pairs) whose value is not an error; each error
        is recorded (the value an :class:`HpcvibError` from reading, see ``load_structures``)."""
        out = []
        for label, value in items:
            if isinstance(value, HpcvibError):
                self.record(label, str(value))
            else:
                out.append((label, value))
        return out

    def finish(self) -> None:
        """Raise :class:`SomeItemsFailed` when any item failed."""
        if self.failed:
            names = ", ".join(label for label, _ in self.failed[:3]) + (" …" if len(self.failed) > 3 else "")
            raise SomeItemsFailed(f"{len(self.failed)} of {self.total} structures failed ({names}); "
                                  "every other result was reported")
