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
writers. :meth:`Database.merge` (rank 0, at the end of each stage) folds those record files into
a new *segment* ``DB.h5.d/segment-NNNNNN.h5`` written atomically — the main file is never
rewritten during a run, so a merge needs free space for the new records only (checked before it
starts). :meth:`Database.compact` folds the segments into the main file (a copy, renamed over it)
at the end of a run when the disk has room for the copy (else they stay, and are read as they are). A job killed at any
instant therefore leaves a readable main file, complete segments and complete record files;
readers see all three, later over earlier (:meth:`Database.read`), and rerunning skips every
(key, stage) already present.

A record file that cannot be read (a truncated file from a failing disk) is an error naming the
file; ``Database(path, quarantine=True)`` (``hpcvib run --quarantine``) moves it to
``DB.h5.d/quarantine/`` instead, so its task is computed again.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from hpcvib.errors import InputError
from hpcvib.fileio import atomic_output

STAGES = ("generate", "relax", "thermo", "descriptors")
SECTIONS = ("configs", "references", "events")
#: file-name prefix of merged segments in the pending folder
SEGMENT_PREFIX = "segment-"
#: free space a merge or compaction needs, as a multiple of the bytes it writes
FREE_SPACE_MARGIN = 1.25
#: temporary files of this database older than this (s) are left-overs of a killed writer
STALE_TEMPORARY_SECONDS = 600.0


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


#: attributes of immutable stored files (the main file, segments), by file identity: a job
#: scans the records' attributes several times per batch, and reading ~10⁵ HDF5 attributes
#: costs ~15 s each time on a 20 000-configuration database
_ATTRIBUTE_CACHE: dict = {}


def _file_identity(path: str) -> tuple:
    st = os.stat(path)
    return (path, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def _cache_put(ident: tuple, key: tuple, value):
    """Store ``value`` for one stored file (``ident`` from :func:`_file_identity`) and forget what
    was cached for an earlier file at the same path (replaced by a compaction)."""
    for old in [k for k in _ATTRIBUTE_CACHE if k[0][0] == ident[0] and k[0] != ident]:
        del _ATTRIBUTE_CACHE[old]
    _ATTRIBUTE_CACHE[(ident, *key)] = value
    return value


def _copy_without_data(record: Record) -> Record:
    return Record(record.section, record.key, record.stage, dict(record.attrs))


def _check_name(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"invalid database key {name!r}")
    return name


class Database:
    """A reference database at ``path`` (HDF5) with its folder ``path + '.d'`` of pending records
    and merged segments. ``quarantine``: move an unreadable record file aside (and log it)
    instead of stopping with an error."""

    def __init__(self, path: str, quarantine: bool = False):
        self.path = os.path.abspath(path)
        self.pending_dir = self.path + ".d"
        self.quarantine = quarantine

    # ---------------------------------------------------------------- files
    def segments(self) -> list[str]:
        """Merged segment files, oldest first."""
        return sorted(glob.glob(os.path.join(self.pending_dir, f"{SEGMENT_PREFIX}*.h5")))

    def _pending(self, section: str = "*", stage: str = "*") -> list[str]:
        return sorted(glob.glob(os.path.join(self.pending_dir, f"{section}~*~{stage}.h5")))

    def _stored(self) -> list[str]:
        """The main file and the segments, oldest first (a later file's record wins)."""
        return [self.path] + self.segments()

    def _open(self, path: str):
        """``h5py.File(path, "r")``; an unreadable file is an error naming it — or, for a pending
        record with ``quarantine``, moved aside (returns None)."""
        import h5py

        try:
            return h5py.File(path, "r")
        except OSError as exc:
            is_record = os.path.dirname(path) == self.pending_dir and "~" in os.path.basename(path)
            if not (is_record and self.quarantine):
                hint = "; rerun with --quarantine to move it aside and recompute it" if is_record else ""
                raise InputError(f"{path}: unreadable database file ({exc}){hint}") from None
            folder = os.path.join(self.pending_dir, "quarantine")
            os.makedirs(folder, exist_ok=True)
            os.replace(path, os.path.join(folder, os.path.basename(path)))
            from hpcvib.log import get_logger

            get_logger("database").warning("%s: unreadable record moved to %s (%s); its task will be "
                                           "computed again", path, folder, exc)
            return None

    def check_records(self) -> int:
        """Open every pending record once: an unreadable one is an error naming it, or is
        quarantined (:meth:`_open`). Returns the number quarantined. Rank 0 only."""
        bad = 0
        for p in self._pending():
            f = self._open(p)
            if f is None:
                bad += 1
            else:
                f.close()
        return bad

    def remove_stale_temporaries(self) -> int:
        """Remove this database's temporary files left by killed writers (older than
        :data:`STALE_TEMPORARY_SECONDS`); returns the bytes freed. Rank 0 only."""
        now, freed = time.time(), 0
        folder = os.path.dirname(self.path)
        candidates = glob.glob(os.path.join(self.pending_dir, ".tmp-*")) + glob.glob(os.path.join(folder, ".tmp-*.h5"))
        for p in candidates:
            try:
                st = os.stat(p)
                if now - st.st_mtime > STALE_TEMPORARY_SECONDS:
                    os.remove(p)
                    freed += st.st_size
            except FileNotFoundError:
                continue
        if freed:
            from hpcvib.log import get_logger

            get_logger("database").warning("removed %.1f MB of temporary files left by an interrupted run",
                                           freed / 1e6)
        return freed

    def _require_free(self, nbytes: int, what: str) -> None:
        """OSError (ENOSPC, naming the database) unless ``nbytes`` × margin are free."""
        free = shutil.disk_usage(self.pending_dir).free
        need = int(nbytes * FREE_SPACE_MARGIN)
        if free < need:
            raise OSError(errno.ENOSPC, f"{what} needs {need / 1e6:.1f} MB free, {free / 1e6:.1f} MB available "
                                        "(nothing was changed; free space and rerun)", self.path)

    # ---------------------------------------------------------------- writing
    def create(self, provenance: dict) -> None:
        """Create an empty database (if absent) and the pending folder. Rank 0 only."""
        os.makedirs(self.pending_dir, exist_ok=True)
        if os.path.exists(self.path):
            self._check_readable()
            return
        def build(f):
            prov = f.create_group("provenance")
            for k, v in provenance.items():
                prov.attrs[k] = _encode_attr(v)
            prov.create_group("runs")
            for s in SECTIONS:
                f.create_group(s)
        write_hdf5_image(self.path, build)

    def write(self, record: Record) -> None:
        """Write one record atomically as a file in the pending folder (any rank)."""
        name = f"{record.section}~{_check_name(record.key)}~{record.stage}.h5"
        write_hdf5_image(os.path.join(self.pending_dir, name),
                         lambda f: _write_group(f.create_group(record.path), record))

    def add_run(self, info: dict) -> None:
        """Append a job-run entry (parameters, timings, counts) to /provenance/runs."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.write(Record("provenance", f"run-{stamp}-{os.getpid()}", "run", info))

    def merge(self) -> int:
        """Fold the pending records into a new segment (written atomically; the main file is
        untouched). Rank 0 only. Returns the number of records merged."""
        pending = self._pending()
        if not pending:
            return 0
        self._require_free(sum(os.path.getsize(p) for p in pending), "merging the pending records")
        segments = self.segments()
        number = int(os.path.basename(segments[-1])[len(SEGMENT_PREFIX):-3]) + 1 if segments else 0
        merged = []

        def build(dst):
            for p in pending:
                src = self._open(p)
                if src is None:
                    continue
                with src:
                    _copy_record(src, dst, *os.path.basename(p)[:-3].split("~"))
                merged.append(p)
        write_hdf5_image(os.path.join(self.pending_dir, f"{SEGMENT_PREFIX}{number:06d}.h5"), build)
        for p in merged:
            os.remove(p)
        return len(merged)

    def compact(self, min_segments: int = 1) -> bool:
        """Fold the segments into the main file (a copy of it, renamed over it) when there are at
        least ``min_segments`` and the disk has room for the copy (else a warning; the segments
        stay and nothing is lost). Rank 0 only. Returns whether it compacted."""
        import h5py

        segments = self.segments()
        if len(segments) < min_segments or not segments:
            return False
        size = os.path.getsize(self.path) + sum(os.path.getsize(p) for p in segments)
        try:
            self._require_free(size, "folding the segments into the main file")
            _reserve(os.path.dirname(self.path), int(size * FREE_SPACE_MARGIN))
        except OSError as exc:
            from hpcvib.log import get_logger

            get_logger("database").warning("%s: segments not folded into the main file (%s); the database is "
                                           "complete as it is (main file + %s)", self.path, exc.strerror or exc,
                                           os.path.basename(self.pending_dir))
            return False
        with atomic_output(self.path) as tmp:
            shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "a") as dst:
                for p in segments:
                    with self._open(p) as src:
                        for section, key, stage, path in _record_paths(src):
                            _copy_record(src, dst, section, key, stage, path)
        for p in segments:
            os.remove(p)
        return True

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

    def _stored_attributes(self, path: str, section: str, stage: str | None) -> dict:
        """{key: {stage: Record without data}} of one stored file (main file or segment), read
        once per process and file identity (:data:`_ATTRIBUTE_CACHE`; these files are never
        modified in place, only replaced)."""
        ident = _file_identity(path)
        cached = _ATTRIBUTE_CACHE.get((ident, section, stage))
        if cached is not None:
            return cached
        part: dict = {}
        with self._open(path) as f:
            for key, grp in (f[section].items() if section in f else ()):
                for st, g in grp.items():
                    if stage is None or st == stage:
                        part.setdefault(key, {})[st] = _read_group(section, key, st, g, False)
        return _cache_put(ident, (section, stage), part)

    def _stored_names(self, path: str, section: str, stage: str) -> frozenset:
        """Keys of one stored file that have ``stage`` (cached like :meth:`_stored_attributes`)."""
        ident = _file_identity(path)
        attributes = _ATTRIBUTE_CACHE.get((ident, section, stage))
        if attributes is not None:
            return frozenset(attributes)
        names = _ATTRIBUTE_CACHE.get((ident, section, stage, "names"))
        if names is None:
            with self._open(path) as f:
                names = frozenset(k for k, g in f[section].items() if stage in g) if section in f else frozenset()
            _cache_put(ident, (section, stage, "names"), names)
        return names

    def read(self, section: str = "configs", stage: str | None = None, with_data: bool = True,
             keys=None) -> dict:
        """{key: {stage: Record}} of ``section`` from the main file, the segments and the pending
        records (``with_data=False``: attributes only, no arrays, cached per stored file;
        ``keys``: only these keys)."""
        if not self.exists():
            raise InputError(f"{self.path}: database does not exist")
        self._check_readable()
        out: dict = {}
        wanted = None if keys is None else set(keys)
        for path in self._stored():
            if not with_data:
                for key, stages in self._stored_attributes(path, section, stage).items():
                    if wanted is None or key in wanted:
                        for st, rec in stages.items():
                            out.setdefault(key, {})[st] = _copy_without_data(rec)
                continue
            with self._open(path) as f:
                groups = f[section] if section in f else {}
                names = groups.keys() if wanted is None else [k for k in sorted(wanted) if k in groups]
                for key in names:
                    for st, g in groups[key].items():
                        if stage is None or st == stage:
                            out.setdefault(key, {})[st] = _read_group(section, key, st, g, with_data)
        for p in self._pending(section, stage or "*"):
            _, key, st = os.path.basename(p)[:-3].split("~")
            if wanted is not None and key not in wanted:
                continue
            f = self._open(p)
            if f is not None:
                with f:
                    out.setdefault(key, {})[st] = _read_group(section, key, st, f[f"/{section}/{key}/{st}"], with_data)
        return out

    def read_record(self, section: str, key: str, stage: str) -> Record | None:
        """One record (pending file first, then the newest segment holding it, then the main
        file), or None."""
        pending = os.path.join(self.pending_dir, f"{section}~{key}~{stage}.h5")
        if os.path.exists(pending):
            f = self._open(pending)
            if f is not None:
                with f:
                    return _read_group(section, key, stage, f[f"/{section}/{key}/{stage}"])
        path = _stored_path(section, key, stage)
        for stored in reversed(self._stored()):
            with self._open(stored) as f:
                if path in f:
                    return _read_group(section, key, stage, f[path])
        return None

    def completed(self, stage: str, section: str = "configs") -> set:
        """Keys that already have ``stage`` (ok, failed or duplicate: all are final); names only."""
        if not self.exists():
            return set()
        done = set()
        for path in self._stored():
            done |= self._stored_names(path, section, stage)
        for p in self._pending(section, stage):
            done.add(os.path.basename(p)[:-3].split("~")[1])
        return done

    def provenance(self) -> dict:
        if not self.exists():
            raise InputError(f"{self.path}: database does not exist")
        self._check_readable()
        with self._open(self.path) as f:
            prov = {k: _decode_attr(v) for k, v in f["provenance"].attrs.items()}
        runs = {}
        for path in self._stored():
            with self._open(path) as f:
                if "provenance/runs" in f:
                    runs.update({name: {k: _decode_attr(v) for k, v in g.attrs.items()}
                                 for name, g in f["provenance/runs"].items()})
        for p in self._pending("provenance", "run"):
            f = self._open(p)
            if f is not None:
                with f:
                    name, g = next(iter(f["provenance"].items()))
                    runs[name] = {k: _decode_attr(v) for k, v in g["run"].attrs.items()}
        prov["runs"] = [runs[name] for name in sorted(runs)]
        return prov


def _stored_path(section: str, key: str, stage: str) -> str:
    """Where a record lives in the main file and in a segment."""
    return f"/provenance/runs/{key}" if section == "provenance" else f"/{section}/{key}/{stage}"


def _copy_record(src, dst, section: str, key: str, stage: str, src_path: str | None = None) -> None:
    """Copy one record group of ``src`` (a record file, or ``src_path`` in a segment) into the
    main-file layout of ``dst``, replacing an older copy."""
    target = _stored_path(section, key, stage)
    if target in dst:
        del dst[target]
    parent = dst.require_group(os.path.dirname(target))
    src.copy(src[src_path or f"/{section}/{key}/{stage}"], parent, name=os.path.basename(target))


def _record_paths(f):
    """(section, key, stage, path) of every record in a main-layout file (a segment)."""
    for section in SECTIONS:
        for key, grp in (f[section].items() if section in f else ()):
            for stage in grp:
                yield section, key, stage, f"/{section}/{key}/{stage}"
    for key in (f["provenance/runs"] if "provenance/runs" in f else ()):
        yield "provenance", key, "run", f"/provenance/runs/{key}"


# -------------------------------------------------------------------- writing HDF5 safely
def write_hdf5_image(path: str, build) -> None:
    """Build an HDF5 file in memory (``build(h5py.File)``) and write its bytes to ``path``
    atomically (:func:`hpcvib.fileio.atomic_output`): HDF5 never writes to the disk itself, so a
    full disk or an exceeded quota is an ``OSError`` naming ``path`` — HDF5's own write errors
    at close crash the process (measured: a segmentation fault under a file-size limit)."""
    import h5py

    with h5py.File(f"in-memory:{path}", "w", driver="core", backing_store=False) as f:
        build(f)
        f.flush()
        image = f.id.get_file_image()
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(image)


def _reserve(folder: str, nbytes: int) -> None:
    """OSError unless ``nbytes`` can really be written in ``folder`` (quotas and file-size limits
    included, which free-space figures do not show): a temporary file is allocated and removed."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-reserve-", dir=folder)
    try:
        os.posix_fallocate(fd, 0, max(nbytes, 1))
    finally:
        os.close(fd)
        os.remove(tmp)


# -------------------------------------------------------------------- labels
def family_label(generate: "Record | None") -> str:
    """A configuration's family from its generate record: kind and size (``V4``, ``I3``), or the
    imported family label alone; ``?`` without a record."""
    if generate is None:
        return "?"
    return f"{generate.attrs.get('kind', '?')}{generate.attrs.get('size', '')}"


def family_sort_key(label: str) -> tuple:
    """Vacancy families first, then by size, then other labels alphabetically."""
    m = re.fullmatch(r"([A-Za-z]+)(\d+)", label)
    return (0, label[0] != "V", int(m.group(2)), label) if m else (1, False, 0, label)


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
    present = {st for stages in configs.values() for st in stages}
    order = list(STAGES) + sorted(present - set(STAGES))  # stages added by a job-stage plug-in last
    for key, stages in sorted(configs.items()):
        row = {"key": key}
        for st in order:
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
        thermo = stages.get("thermo")
        if thermo is not None and "dS_local" in thermo.data:
            atoms.arrays["dS_local_kB"] = np.asarray(thermo.data["dS_local"])  # per-atom ΔS_i (OVITO)
        frames.append(atoms)
    with atomic_output(path) as tmp:
        write(tmp, frames, format="extxyz")
    return len(frames)


def event_frames(db: Database, key: str, record: Record):
    """(minimum, saddle[, final minimum]) of an ok event as ase.Atoms with its results in the
    saddle's ``info``: the triplet an ``[import] events`` file holds (round trip)."""
    source = db.read_record("events", key, "source")
    if source is not None:  # an imported event: its own frames
        from ase import Atoms

        d = source.data
        minimum = Atoms(numbers=d["minimum_numbers"], positions=d["minimum_positions"], cell=d["minimum_cell"],
                        masses=d["minimum_masses"], pbc=True)
    else:
        minimum = atoms_from_record(db.read_record("configs", record.attrs["minimum"], "relax"))
    frames = [minimum]
    for name in ("saddle_positions", "final_positions"):
        if name in record.data:
            atoms = minimum.copy()
            atoms.positions = record.data[name]
            frames.append(atoms)
    info = {k: v for k, v in record.attrs.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    minimum.info.update(event=key, role="minimum")
    frames[1].info.update(info, event=key, role="saddle")
    if len(frames) > 2:
        frames[2].info.update(event=key, role="final minimum")
    return frames


def export_events(db: Database, folder: str) -> int:
    """One extxyz file per ok event in ``folder`` (``<key>.extxyz``: minimum, saddle, final
    minimum) — what ``hpcvib import --events`` reads back."""
    from ase.io import write

    os.makedirs(folder, exist_ok=True)
    n = 0
    for key, st in sorted(db.read("events").items()):
        rec = st.get("event")
        if rec is None or not rec.ok:
            continue
        path = os.path.join(folder, key if key.endswith(".extxyz") else f"{key}.extxyz")
        with atomic_output(path) as tmp:
            write(tmp, event_frames(db, key, rec), format="extxyz")
        n += 1
    return n
