"""Events (minimum, first-order saddle, final minimum) as other codes write them.

Three layouts are read, each giving one event per (minimum, saddle[, final]) triple:

* a file of 2 or 3 frames (what ``hpcvib saddle -o`` and ``hpcvib export --events`` write);
* an eOn-style directory of one event: ``reactant`` / ``saddle`` [/ ``product``] files (also
  ``min`` / ``sad`` / ``final``), any suffix ASE reads;
* an ARTn-style directory of many events: numbered ``minNNNN`` and ``sadNNNN`` files (any suffix
  ASE reads, e.g. pARTn's ``.xyz``). Which minima belong to which saddle comes from the
  directory's ``events.list`` when there is one — every line naming a ``sad`` file and its
  ``min`` files, initial minimum first (any other words on the line, such as ARTn's
  accepted/rejected, are kept as the event's status) — and otherwise from the numbering: saddle
  N starts from the highest-numbered minimum below N and ends in minimum N when that exists.
"""

from __future__ import annotations

import os
import re

from hpcvib.errors import InputError

#: file-name stems of an event directory, in order (eOn's layout: reactant, saddle, product)
EVENT_DIRECTORY_ROLES = (("reactant", "minimum", "min"), ("saddle", "sad"), ("product", "final"))
#: a numbered ARTn configuration file: ``min1000``, ``sad1001.xyz``, ...
ARTN_FILE = re.compile(r"^(min|sad)(\d+)(\.[A-Za-z0-9_.-]+)?$")
#: the ARTn event list of a directory
ARTN_EVENT_LIST = "events.list"


def artn_files(path: str) -> dict:
    """{("min" | "sad", number): file name} of the numbered ARTn files of directory ``path``
    (empty when it has none); two files of one role and number are refused."""
    out = {}
    for name in sorted(os.listdir(path)):
        m = ARTN_FILE.match(name)
        if m is None or not os.path.isfile(os.path.join(path, name)):
            continue
        key = (m.group(1), int(m.group(2)))
        if key in out:
            raise InputError(f"{path}: two files for {m.group(1)}{m.group(2)} ({out[key]}, {name})")
        out[key] = name
    return out


def is_artn_directory(path: str) -> bool:
    """A directory holding numbered ARTn ``sad`` files (and no single-event eOn layout)."""
    return os.path.isdir(path) and any(role == "sad" for role, _ in artn_files(path))


def artn_events(path: str) -> list[tuple[str, list[str], str]]:
    """The events of an ARTn directory: (name, [initial minimum, saddle(, final minimum)] file
    paths, status) per saddle, in saddle order; from ``events.list`` when present, else by
    numbering (module docstring). A saddle without an initial minimum is refused."""
    files = artn_files(path)
    listing = os.path.join(path, ARTN_EVENT_LIST)
    triples = _listed_events(listing, files) if os.path.isfile(listing) else _numbered_events(path, files)
    return [(name, [os.path.join(path, f) for f in members], status) for name, members, status in triples]


def _listed_events(listing: str, files: dict) -> list:
    out = []
    with open(listing, encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, 1):
            words = line.split()
            tags = [w for w in words if re.fullmatch(r"(min|sad)\d+", w)]
            if not tags:
                continue
            saddles = [t for t in tags if t.startswith("sad")]
            minima = [t for t in tags if t.startswith("min")]
            if len(saddles) != 1 or not 1 <= len(minima) <= 2:
                raise InputError(f"{listing}:{line_no}: an event line names one sad file and one or two min "
                                 f"files, got {' '.join(tags)}")
            members = []
            for tag in [minima[0], saddles[0]] + minima[1:]:
                name = files.get((tag[:3], int(tag[3:])))
                if name is None:
                    raise InputError(f"{listing}:{line_no}: no file for {tag} in {os.path.dirname(listing) or '.'}")
                members.append(name)
            status = " ".join(w for w in words if w not in tags) or "listed"
            out.append((saddles[0], members, status))
    return out


def _numbered_events(path: str, files: dict) -> list:
    minima = sorted(n for role, n in files if role == "min")
    out = []
    for n in sorted(n for role, n in files if role == "sad"):
        before = [m for m in minima if m < n]
        if not before:
            raise InputError(f"{path}: saddle {files[('sad', n)]} has no lower-numbered min file to start from "
                             f"(give an {ARTN_EVENT_LIST})")
        members = [files[("min", before[-1])], files[("sad", n)]]
        if ("min", n) in files:
            members.append(files[("min", n)])
        out.append((f"sad{n}", members, "numbered"))
    return out


def event_frames_from(path: str, file_format=None, types=None) -> list:
    """The frames of one imported event: a 2- or 3-frame file, or a directory holding one file
    per role — ``reactant``/``saddle``/``product`` (eOn; any suffix ASE reads, e.g. ``.con``),
    also ``min``/``sad``/``final`` — of which the product is optional."""
    from hpcvib.geometry.structures import read_structures

    if not os.path.isdir(path):
        return read_structures(path, format=file_format, types=types)
    names = sorted(os.listdir(path))
    frames = []
    for k, stems in enumerate(EVENT_DIRECTORY_ROLES):
        found = [n for n in names if os.path.splitext(n)[0].lower() in stems]
        if not found:
            if k == 2:
                break
            raise InputError(f"{path}: an event directory needs a {stems[0]} file ({' / '.join(stems)}.*) "
                             f"or numbered ARTn min/sad files")
        if len(found) > 1:
            raise InputError(f"{path}: more than one {stems[0]} file ({', '.join(found)})")
        frames.append(read_structures(os.path.join(path, found[0]), format=file_format, types=types)[-1])
    return frames


def member_frames(paths: list[str], file_format=None, types=None) -> list:
    """The last frame of each of an event's member files (minimum, saddle[, final])."""
    from hpcvib.geometry.structures import read_structures

    return [read_structures(p, format=file_format, types=types)[-1] for p in paths]
