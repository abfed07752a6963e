"""The HDF5 reference database: structures, exact results, descriptors, events, provenance.

Layout of ``DB.h5``::

    /provenance            attrs: hpcvib version, created; /provenance/runs/<n> one per job run
    /configs/<key>/<stage> one group per configuration and stage (generate, relax, thermo,
                           descriptors); attrs hold scalars and labels, datasets hold arrays;
                           attr ``status`` is ``ok``, ``failed`` (with ``reason``) or ``duplicate``
    /references/<key>/...  perfect reference cells (one per strain and cell size)
    /events/<key>/event    minimum–saddle–minimum events (keys of the three configurations, ΔE,
                           ln ν*)

Crash safety without parallel-HDF5 collectives: every record is first written as its own small
HDF5 file in ``DB.h5.d/`` under a temporary name and renamed into place (atomic on POSIX), by
whichever rank group produced it — no locks, no collective metadata operations, any number of
writers. :meth:`Database.merge` folds those record files into a copy of the main file and renames
the copy over it (rank 0, at the end of each stage). A job killed at any instant therefore leaves
a readable main file plus complete record files; readers see both (:meth:`Database.read`), and
rerunning skips every (key, stage) already present.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .fileio import atomic_output

STAGES = ("generate", "relax", "thermo", "descriptors")
SECTIONS = ("configs", "references", "events")


@dataclass
class Record:
    """One (section, key, stage) entry: scalar/string ``attrs`` and array ``data``."""

    section: str
    key: str
    stage: str
    attrs: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.attrs.get("status", "ok") == "ok"

    @property
    def path(self) -> str:
        return f"/{self.section}/{self.key}/{self.stage}"


def _encode_attr(value):
    if isinstance(value, (dict, list, tuple)):
        return "json:" + json.dumps(value)
    if value is None:
        return "none:"
    return value


def _decode_attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        if value.startswith("json:"):
            return json.loads(value[5:])
        if value == "none:":
            return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_group(group, record: Record) -> None:
    for k, v in record.attrs.items():
        group.attrs[k] = _encode_attr(v)
    for k, v in record.data.items():
        group.create_dataset(k, data=np.asarray(v))


def _read_group(section, key, stage, group, with_data: bool = True) -> Record:
    attrs = {k: _decode_attr(v) for k, v in group.attrs.items()}
    data = {k: group[k][()] for k in group.keys()} if with_data else {}
    return Record(section, key, stage, attrs, data)


def _check_name(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"invalid database key {name!r}")
    return name


class Database:
    """A reference database at ``path`` (HDF5) with its pending-record folder ``path + '.d'``."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self.pending_dir = self.path + ".d"

    # ---------------------------------------------------------------- writing
    def create(self, provenance: dict) -> None:
        """Create an empty database (if absent) and the pending folder. Rank 0 only."""
        import h5py

        os.makedirs(self.pending_dir, exist_ok=True)
        if os.path.exists(self.path):
            self._check_readable()
            return
        with atomic_output(self.path) as tmp:
            with h5py.File(tmp, "w") as f:
                prov = f.create_group("provenance")
                for k, v in provenance.items():
                    prov.attrs[k] = _encode_attr(v)
                prov.create_group("runs")
                for s in SECTIONS:
                    f.create_group(s)

    def write(self, record: Record) -> None:
        """Write one record atomically as a file in the pending folder (any rank)."""
        import h5py

        name = f"{record.section}~{_check_name(record.key)}~{record.stage}.h5"
        target = os.path.join(self.pending_dir, name)
        with atomic_output(target) as tmp:
            with h5py.File(tmp, "w") as f:
                _write_group(f.create_group(record.path), record)
                f.flush()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())

    def add_run(self, info: dict) -> None:
        """Append a job-run entry (parameters, timings, counts) to /provenance/runs."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.write(Record("provenance", f"run-{stamp}-{os.getpid()}", "run", info))

    def merge(self) -> int:
        """Fold pending records into the main file (copy, append, fsync, rename). Rank 0 only.
        Returns the number of records merged."""
        import h5py

        pending = sorted(glob.glob(os.path.join(self.pending_dir, "*~*~*.h5")))
        if not pending:
            return 0
        with atomic_output(self.path) as tmp:
            shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "a") as dst:
                for p in pending:
                    section, key, stage = os.path.basename(p)[:-3].split("~")
                    target = f"/{section}/{key}/{stage}" if section != "provenance" else f"/provenance/runs/{key}"
                    if target in dst:
                        del dst[target]
                    with h5py.File(p, "r") as src:
                        src_path = f"/{section}/{key}/{stage}"
                        parent = dst.require_group(os.path.dirname(target))
                        src.copy(src[src_path], parent, name=os.path.basename(target))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        for p in pending:
            os.remove(p)
        return len(pending)

    # ---------------------------------------------------------------- reading
    def _check_readable(self) -> None:
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                missing = [s for s in SECTIONS if s not in f]
        except OSError as exc:
            raise InputError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        if missing:
            raise InputError(f"{self.path}: not an hpcvib database (missing {', '.join(missing)})")

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def read(self, section: str = "configs", stage: str | None = None, with_data: bool = True) -> dict:
        """{key: {stage: Record}} of ``section`` from the main file and pending records
        (``with_data=False``: attributes only, no arrays)."""
        import h5py

        if not self.exists():
            raise InputError(f"{self.path}: database does not exist")
        self._check_readable()
        out: dict = {}
        with h5py.File(self.path, "r") as f:
            for key, grp in f[section].items():
                for st, g in grp.items():
                    if stage is None or st == stage:
                        out.setdefault(key, {})[st] = _read_group(section, key, st, g, with_data)
        for p in sorted(glob.glob(os.path.join(self.pending_dir, f"{section}~*~*.h5"))):
            _, key, st = os.path.basename(p)[:-3].split("~")
            if stage is not None and st != stage:
                continue
            with h5py.File(p, "r") as f:
                out.setdefault(key, {})[st] = _read_group(section, key, st, f[f"/{section}/{key}/{st}"], with_data)
        return out

    def read_record(self, section: str, key: str, stage: str) -> Record | None:
        """One record (pending file first, then the main file), or None."""
        import h5py

        pending = os.path.join(self.pending_dir, f"{section}~{key}~{stage}.h5")
        if os.path.exists(pending):
            with h5py.File(pending, "r") as f:
                return _read_group(section, key, stage, f[f"/{section}/{key}/{stage}"])
        with h5py.File(self.path, "r") as f:
            path = f"/{section}/{key}/{stage}"
            return _read_group(section, key, stage, f[path]) if path in f else None

    def completed(self, stage: str, section: str = "configs") -> set:
        """Keys that already have ``stage`` (ok, failed or duplicate: all are final); names only."""
        import h5py

        if not self.exists():
            return set()
        with h5py.File(self.path, "r") as f:
            done = {k for k, g in f[section].items() if stage in g}
        for p in glob.glob(os.path.join(self.pending_dir, f"{section}~*~{stage}.h5")):
            done.add(os.path.basename(p)[:-3].split("~")[1])
        return done

    def provenance(self) -> dict:
        import h5py

        with h5py.File(self.path, "r") as f:
            prov = {k: _decode_attr(v) for k, v in f["provenance"].attrs.items()}
            runs = [{k: _decode_attr(v) for k, v in g.attrs.items()} for _, g in sorted(f["provenance/runs"].items())]
        for p in sorted(glob.glob(os.path.join(self.pending_dir, "provenance~*~run.h5"))):
            with h5py.File(p, "r") as f:
                g = next(iter(f["provenance"].values()))["run"]
                runs.append({k: _decode_attr(v) for k, v in g.attrs.items()})
        prov["runs"] = runs
        return prov


# -------------------------------------------------------------------- structures in records
def structure_data(atoms) -> dict:
    """Arrays that define a structure: positions (Å), cell (Å), atomic numbers, masses (amu)."""
    return {"positions": atoms.positions, "cell": np.asarray(atoms.get_cell()),
            "numbers": atoms.numbers, "masses": atoms.get_masses()}


def atoms_from_record(record: Record):
    from ase import Atoms

    d = record.data
    return Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], masses=d["masses"], pbc=True)


# -------------------------------------------------------------------- flat table and export
def flat_table(db: Database, configs: dict | None = None) -> list[dict]:
    """One row per configuration: labels, status per stage and the scalar results
    (``configs``: an already-read ``db.read("configs")``)."""
    rows = []
    configs = db.read("configs", with_data=False) if configs is None else configs
    for key, stages in sorted(configs.items()):
        row = {"key": key}
        for st in STAGES:
            rec = stages.get(st)
            row[f"{st}_status"] = None if rec is None else rec.attrs.get("status", "ok")
            if rec is None:
                continue
            row.update({k: v for k, v in rec.attrs.items()
                        if k != "status" and isinstance(v, (int, float, str, bool))})
        rows.append(row)
    return rows


def export_csv(db: Database, path: str) -> int:
    import csv

    rows = flat_table(db)
    columns = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
    return len(rows)


def export_extxyz(db: Database, path: str, stage: str = "relax") -> int:
    """Relaxed structures of successful configurations with their scalar results in ``info``."""
    from ase.io import write

    frames = []
    configs = db.read("configs")
    table = {r["key"]: r for r in flat_table(db, configs)}
    for key, stages in sorted(configs.items()):
        rec = stages.get(stage)
        if rec is None or not rec.ok or "positions" not in rec.data:
            continue
        atoms = atoms_from_record(rec)
        atoms.info.update({k: v for k, v in table[key].items() if v is not None})
        frames.append(atoms)
    with atomic_output(path) as tmp:
        write(tmp, frames, format="extxyz")
    return len(frames)
