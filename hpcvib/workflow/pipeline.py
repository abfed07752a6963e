"""``hpcvib run JOB.toml``: generate → relax (+ strain) → thermo → descriptors → fit → report.

Every stage is a list of tasks (one configuration each) farmed over rank groups
(:mod:`hpcvib.workflow.farm`); every task writes its own record atomically (:mod:`hpcvib.database`), so a
killed job resumes where it stopped and a rerun of a finished job does nothing. A configuration
that fails (no convergence, not a minimum) gets a ``failed`` record with the reason and is not
used downstream.
"""

from __future__ import annotations

import os
import re
import time
import zlib

import numpy as np

from hpcvib import __version__
from hpcvib.database import Database, Record, atoms_from_record, structure_data
from hpcvib.errors import ConvergenceError, InputError, NotAMinimumError
from hpcvib.landscape.fingerprint import find_duplicates, lattice_fingerprint, symmetry_equivalent
from hpcvib.log import get_logger, per_task_detail_at_debug
from hpcvib.parallel import collective_call, root_only
from hpcvib.workflow import jobfile
from hpcvib.workflow.farm import run_tasks

#: job tables whose values change results; a database remembers them and refuses others
RESULT_TABLES = ("system", "generate", "amorphous", "relax", "thermo", "descriptors", "saddles")


def parse_batches(text: str) -> set[int]:
    """Batch numbers (1-based) from ``--batches`` text: numbers and inclusive ranges separated
    by commas, e.g. ``5-14`` or ``1-4,9``; :class:`InputError` naming the text otherwise."""
    numbers: set[int] = set()
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise InputError(f"--batches {text}: give batch numbers >= 1 and ranges such as 5-14 or 1-4,9")
        numbers.update(range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1))
    return numbers


def format_batches(numbers) -> str:
    """``numbers`` as the shortest ``--batches`` text (ranges of consecutive numbers)."""
    numbers, parts = sorted(numbers), []
    for n in numbers:
        if parts and n == parts[-1][1] + 1:
            parts[-1][1] = n
        else:
            parts.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def strain_key(strain: float) -> str:
    return f"{strain:+.4f}"


#: reference keys of imported crystal hosts: lattice, repetitions and the exact lattice parameter
IMPORTED_REFERENCE = re.compile(r"^(bcc|fcc)(\d+)x(\d+)x(\d+)a([0-9.eE+-]+)$")
#: attributes an imported configuration carries from its import record to its relax record
IMPORT_LABELS = ("source", "reference_key", "label")


def imported_reference_key(lattice: str, reps, a: float) -> str:
    """Reference key of an imported bcc or fcc host of ``reps`` conventional cells of side ``a`` (Å)."""
    return f"{lattice}{reps[0]}x{reps[1]}x{reps[2]}a{float(a)!r}"


def import_key(path: str, frame: int | None) -> str:
    """Database key of an imported frame: the file's path with separators as ``_`` (and
    ``@frame`` for multi-frame files), so keys are unique per file and frame."""
    name = os.path.normpath(path).lstrip("./")
    key = re.sub(r"[^A-Za-z0-9_.+-]", "_", name.replace(os.sep, "_")) or "structure"
    return key if frame is None else f"{key}@{frame}"


def json_label(labels: dict) -> str:
    """extxyz ``info`` labels of an imported frame as a JSON text attribute."""
    import json

    return json.dumps(labels, sort_keys=True, default=str)


def parse_imported_reference(key: str):
    """(lattice, (nx, ny, nz), a) of an imported host's reference key, or None for a strain key."""
    m = IMPORTED_REFERENCE.match(key)
    return None if m is None else (m.group(1), tuple(int(m.group(i)) for i in (2, 3, 4)), float(m.group(5)))


#: seed of amorphous cell ``index`` = job seed × stride + index (a prime larger than any cell count)
AMORPHOUS_SEED_STRIDE = 100003


class Pipeline:
    """One job on ``comm``: ``Pipeline(comm, job).run()``."""

    def __init__(self, comm, job, database: str | None = None, quarantine: bool = False,
                 batches: set[int] | None = None):
        from hpcvib.potentials import lattice_constant, load_potential
        from hpcvib.workflow.jobfile import expand_path

        self.comm = comm
        self.job = job
        self.log = get_logger("run")
        self.db = Database(database or job["job"]["database"], quarantine=quarantine)
        # every rank loads the potential; a rank that cannot read it raises on every rank
        self.pot = collective_call(comm, lambda: load_potential(expand_path(job["system"]["potential"])))
        sysj = job["system"]
        self.lattice = sysj["lattice"]
        self.symbol = sysj["symbol"] or self.pot.species[0]
        self.a0 = float(sysj["a0"]) or (root_only(comm, lattice_constant, self.pot, self.lattice, self.symbol)
                                        if self.has_perfect_reference else 0.0)
        self.n = int(sysj["cell"])
        self.group_size = int(job["job"]["group_size"])
        self.timings: dict = {}
        self._batch = None  # the unstrained keys of the batch being run, or None (all)
        self.batches = batches  # the batch numbers (1-based) this run builds, or None (all)

    # ---------------------------------------------------------------- driver
    #: stages that a batched job runs once per batch of generated configurations
    BATCHED_STAGES = ("relax", "thermo", "descriptors")

    def run(self) -> dict:
        batched = [s for s in self.job.stages if s in self.BATCHED_STAGES]
        batch_size = int(self.job["job"]["batch_size"])
        if self.batches is not None and not (batch_size > 0 and "generate" in self.job.stages and batched):
            raise InputError(f"--batches {format_batches(self.batches)}: the job is not batched (it needs "
                             "[job] batch_size > 0, a [generate] stage and relax/thermo/descriptors)")
        root_only(self.comm, self._open_database)
        for stage in self.job.stages:
            if batch_size > 0 and "generate" in self.job.stages and stage in batched:
                if stage == batched[0]:
                    self._run_batches(batched, batch_size)
                continue
            self._run_stage(stage)
        root_only(self.comm, self._record_run)
        return self.timings

    def _run_stage(self, stage: str) -> None:
        t = time.perf_counter()
        self.log.info("== stage %s ==", stage)
        STAGE_RUNNERS[stage](self)
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t
        self.log.info("stage %s finished in %.1f s", stage, time.perf_counter() - t)

    def _run_batches(self, stages, batch_size: int) -> None:
        """relax → thermo → descriptors for one batch of generated configurations after the
        other, so a database of days has complete, fittable configurations from the first hour
        on. Batches are consecutive slices of the generated keys in a seeded random order
        (every batch mixes all families); duplicates are judged in that order, so a minimum of
        an earlier batch is never re-labelled a duplicate of a later one."""
        order = self.batch_order()
        n_batches = -(-len(order) // batch_size)
        wanted = sorted(self.batches) if self.batches is not None else list(range(1, n_batches + 1))
        if wanted and wanted[-1] > n_batches:
            raise InputError(f"--batches {format_batches(wanted)}: the job has {n_batches} batches of {batch_size} "
                             f"generated configurations")
        if self.batches is not None:
            self.log.info("batches %s of %d (--batches)", format_batches(wanted), n_batches)
        for number in wanted:
            first = (number - 1) * batch_size
            self._batch = set(order[first:first + batch_size])
            self.log.info("== batch %d of %d (%d configurations) ==", number, n_batches, len(self._batch))
            for stage in stages:
                self._run_stage(stage)
        self._batch = None

    def batch_order(self) -> list:
        """Generated unstrained keys in the job's seeded random order. Collective."""
        return self._shuffled(self._keys_with("generate", lambda rec: rec.attrs.get("parent", "") == ""))

    def _shuffled(self, keys: list) -> list:
        """``keys`` (sorted) in the job's seeded random order — the batch order."""
        rng = np.random.default_rng(self.job["job"]["seed"])
        return [keys[i] for i in rng.permutation(len(keys))]

    def _parameters(self) -> dict:
        """The job's result-defining tables, with defaults resolved at run time filled in (the
        element: '' means the potential's first species), so a database built with the value
        written out resumes with the default that means the same, and vice versa."""
        params = {t: dict(self.job[t]) for t in RESULT_TABLES}
        params["system"]["symbol"] = self.symbol
        return params

    def _open_database(self) -> None:
        folder = os.path.dirname(self.db.path)
        os.makedirs(folder, exist_ok=True)
        params = self._parameters()
        if self.db.exists():
            self.db.remove_stale_temporaries()
            self.db.check_records()
            provenance = self.db.provenance()
            old_sha = provenance.get("potential_sha256")
            if old_sha and old_sha != self.pot.sha256:
                raise InputError(f"{self.job.path}: potential {self.job['system']['potential']} has sha256 "
                                 f"{self.pot.sha256[:16]}…, but {self.db.path} was built with sha256 {old_sha[:16]}… "
                                 "(the file changed): use a new database, or restore the original potential")
            stored = provenance.get("parameters", {})
            for table in RESULT_TABLES:
                for k, v in params[table].items():
                    old = stored.get(table, {}).get(k, v)
                    if old != v and table in self.job.stages + ("system",):
                        raise InputError(f"{self.job.path}: [{table}] {k} = {v!r}, but {self.db.path} was built "
                                         f"with {old!r}; use a new database or the old value")
        self.db.create({"hpcvib_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "potential": self.pot.name, "potential_sha256": self.pot.sha256,
                        "a0": self.a0, "parameters": params, "job_name": self.job["job"]["name"]})

    def _record_run(self) -> None:
        self.db.add_run({"job": self.job.path, "ranks": self.comm.size, "group_size": self.group_size,
                         "stages": list(self.job.stages), "seconds": self.timings,
                         "hpcvib_version": __version__})
        self.db.merge()
        self.db.compact()  # one file again when the disk has room for the copy

    def _merge(self) -> None:
        self.comm.Barrier()
        root_only(self.comm, self.db.merge)

    def _farm(self, tasks, work, what) -> None:
        if tasks:
            with per_task_detail_at_debug("hessian", "spectral", "thermo", "descriptors", "saddle"):
                run_tasks(self.comm, tasks, work, self.group_size, what)
        self._merge()

    def _write(self, group, record: Record) -> None:
        if group.rank == 0:
            self.db.write(record)

    # ---------------------------------------------------------------- generate
    def stage_generate(self) -> None:
        root_only(self.comm, self._generate)
        self._merge()

    def _generate(self) -> None:
        from hpcvib.geometry.defects import build_defect, generate, generate_families

        g = self.job["generate"]
        if g["families"]:
            specs = generate_families(g["families"], g["variants"], self.job["job"]["seed"])
        else:
            specs = generate(g["vacancies"], g["interstitials"], g["orientations"], g["crowdions"],
                             g["shell_radius"], g["variants"], g["max_shapes"])
        done = self.db.completed("generate")
        todo = [s for s in specs if s.key not in done]
        self.log.info("generate: %d configurations (%d already in the database)", len(specs), len(specs) - len(todo))
        for spec in todo:
            atoms = build_defect(spec, self.n, self.a0, self.symbol, self.job["job"]["seed"],
                                 g["displacement"], g["displacement_radius"])
            attrs = dict(spec.labels(), strain=0.0, parent="", n_atoms=len(atoms), status="ok")
            self.db.write(Record("configs", spec.key, "generate", attrs, structure_data(atoms)))

    # ---------------------------------------------------------------- import
    def stage_import(self) -> None:
        root_only(self.comm, self._import)
        self._merge()
        if self.job["import"]["events"]:
            keys = root_only(self.comm, self._import_event_sources)
            self._merge()
            todo = sorted(set(keys) - self.db.completed("event", "events"))
            self.log.info("import: %d events to analyse (%d done)", len(todo), len(keys) - len(todo))
            self._farm(todo, self._event_import_task, "imported events")

    def _import(self) -> None:
        """One configuration per frame of the [import] files: a ``generate`` record with the
        structure and its labels (extxyz ``info``: family, any key = value), and — for
        structures trusted as relaxed — a ``relax`` record after the force check. A bcc host's
        strain and perfect reference come from its cell. Bad frames are recorded as failed."""
        from hpcvib.errors import HpcvibError
        from hpcvib.geometry.structures import read_structures

        imp = self.job["import"]
        done = self.db.completed("generate")
        n_new = 0
        for path in self._expanded(imp["files"]):
            try:
                frames = read_structures(path, format=imp["format"] or None, types=imp["types"] or None)
            except HpcvibError as exc:
                frames = [exc]
            for k, atoms in enumerate(frames):
                key = import_key(path, k if len(frames) > 1 else None)
                if key in done:
                    continue
                for rec in self._import_records(key, path, atoms):
                    self.db.write(rec)
                n_new += 1
        self.log.info("import: %d new configurations (%d already in the database)", n_new, len(done))

    def _expanded(self, patterns) -> list:
        import glob

        from hpcvib.workflow.jobfile import expand_path

        out = []
        for spec in patterns:
            pattern = expand_path(spec)
            paths = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
            if not paths:
                raise InputError(f"{self.job.path}: [import] {spec} matches no file")
            out += paths
        return out

    def _import_event_sources(self) -> list:
        """Every [import] events file as an ``events/<key>/source`` record (its frames), once."""
        from hpcvib.errors import HpcvibError

        imp = self.job["import"]
        fmt, types = imp["format"] or None, imp["types"] or None
        done = self.db.completed("source", "events")
        keys = []
        for key, source, read, extra in self._event_items(self._expanded(imp["events"]), fmt, types):
            keys.append(key)
            if key in done:
                continue
            try:
                frames = read()
                if len(frames) not in (2, 3):
                    raise InputError(f"{source}: an event file has 2 or 3 frames (minimum, saddle[, final "
                                     f"minimum]), not {len(frames)}")
                data = {f"{name}_{k}": v for name, atoms in zip(("minimum", "saddle", "final"), frames)
                        for k, v in structure_data(atoms).items()}
                self.db.write(Record("events", key, "source", dict(extra, status="ok", source=source,
                                                                   frames=len(frames)), data))
            except HpcvibError as exc:
                self.db.write(Record("events", key, "source", dict(extra, status="failed", source=source,
                                                                   reason=str(exc))))
        return keys

    @staticmethod
    def _event_items(paths, fmt, types):
        """(key, source, frame reader, labels) of every imported event: one per event file or
        eOn directory, one per saddle of an ARTn directory (:mod:`hpcvib.geometry.event_files`)."""
        from hpcvib.geometry.event_files import artn_events, event_frames_from, is_artn_directory, member_frames

        for path in paths:
            if not is_artn_directory(path):
                yield import_key(path, None), path, (lambda p=path: event_frames_from(p, fmt, types)), {}
                continue
            for name, members, status in artn_events(path):
                yield (import_key(os.path.join(path, name), None), os.path.join(path, name),
                       (lambda m=members: member_frames(m, fmt, types)),
                       {"files": " ".join(members), "artn_status": status})

    def _event_import_task(self, group, key) -> None:
        """Exact ΔE, ln ν* (Eq. 24–25: two factorisations and λ_neg) and the descriptors D_m, D_s
        of an imported minimum–saddle pair, as an ``events/<key>/event`` record."""
        from ase import Atoms

        from hpcvib.errors import HpcvibError
        from hpcvib.learning.descriptors import descriptor_sums
        from hpcvib.physics.thermo import analyse_structure, check_same_system, ln_attack_frequency

        t = time.perf_counter()
        src = root_only(group, self.db.read_record, "events", key, "source")
        attrs = {"source": src.attrs["source"], "minimum": key, "strain": 0.0,
                 **{k: src.attrs[k] for k in ("files", "artn_status") if k in src.attrs}}
        if not src.ok:
            self._write(group, Record("events", key, "event", dict(attrs, status="failed", reason=src.attrs["reason"])))
            return

        def frame(name):
            d = src.data
            return Atoms(numbers=d[f"{name}_numbers"], positions=d[f"{name}_positions"], cell=d[f"{name}_cell"],
                         masses=d[f"{name}_masses"], pbc=True)
        minimum, saddle = frame("minimum"), frame("saddle")
        tol = float(self.job["import"]["force_tol"])
        try:
            check_same_system(minimum, saddle, f"{key} (minimum)", f"{key} (saddle)")
            m = analyse_structure(group, minimum, self.pot, f"{key} (minimum)", expect="minimum", force_tol=tol)
            s = analyse_structure(group, saddle, self.pot, f"{key} (saddle)", expect="saddle", force_tol=tol)
        except HpcvibError as exc:  # raised on every rank of the group
            self._write(group, Record("events", key, "event", dict(attrs, status="failed", reason=str(exc))))
            return
        lam = float(s.lowest_eigenvalues[0])
        settings = self.descriptor_settings()
        shift = saddle.positions - minimum.positions
        shift -= np.rint(shift @ np.linalg.inv(minimum.cell.array)) @ minimum.cell.array
        attrs.update(status="ok", delta_E_eV=s.energy - m.energy, ln_nu_THz=ln_attack_frequency(m.ln_det_prime,
                     s.ln_det_prime, lam), lambda_neg=lam, n_negative=s.n_negative, ln_det_minimum=m.ln_det_prime,
                     ln_abs_det_saddle=s.ln_det_prime, max_displacement_A=float(np.linalg.norm(shift, axis=1).max()),
                     energies={"minimum": m.energy, "saddle": s.energy}, settings=settings.as_dict(),
                     seconds=time.perf_counter() - t, ranks=group.size)
        attrs["nu_THz"] = float(np.exp(attrs["ln_nu_THz"]))
        data = {"saddle_positions": saddle.positions, "D_min": descriptor_sums(group, minimum, settings).D,
                "D_saddle": descriptor_sums(group, saddle, settings).D}
        if src.attrs.get("frames") == 3:
            data["final_positions"] = src.data["final_positions"]
        self._write(group, Record("events", key, "event", attrs, data))

    def _import_records(self, key: str, path: str, atoms) -> list:
        """generate (and relax) records of one imported frame, or a failed generate record."""
        from hpcvib.errors import HpcvibError
        from hpcvib.geometry.structures import validate
        from hpcvib.geometry.structures import cubic_reference_parameters

        imp = self.job["import"]
        base = {"source": path, "parent": "", "variant": 0}
        try:
            if isinstance(atoms, HpcvibError):
                raise atoms
            validate(atoms, key)
            self.pot.species_index(atoms, key)
            labels = {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float, bool))}
            family = str(labels.pop("family", labels.pop("kind", "imported")))
            attrs = dict(base, kind=family, size="", n_atoms=len(atoms), status="ok",
                         label=json_label(labels))
            if self.has_perfect_reference:
                lattice, reps, a = cubic_reference_parameters(atoms, f"{path} ({key})")
                if lattice != self.lattice:
                    raise InputError(f"{path} ({key}): host is {lattice}, but the job's [system] lattice is "
                                     f"{self.lattice}")
                attrs.update(strain=a / self.a0 - 1.0, reference_key=imported_reference_key(lattice, reps, a))
            else:
                attrs["strain"] = 0.0
        except HpcvibError as exc:
            return [Record("configs", key, "generate", dict(base, status="failed", reason=str(exc), kind="imported",
                                                            size="", strain=0.0))]
        records = [Record("configs", key, "generate", attrs, structure_data(atoms))]
        if imp["relaxed"]:
            ev = self.pot.evaluate(atoms)
            fmax = float(np.linalg.norm(ev.forces, axis=1).max())
            rattrs = {"status": "ok", "energy_eV": ev.energy, "max_force_eV_A": fmax, "method": "imported as relaxed"}
            if fmax > imp["force_tol"]:
                rattrs.update(status="failed", reason=f"largest force {fmax:.3g} eV/Å > force_tol {imp['force_tol']:g}: "
                                                      "not relaxed (relax it first: hpcvib import --relax, or [import] "
                                                      "relaxed = false with a [relax] table)")
            records.append(self._relax_record(key, attrs, atoms if rattrs["status"] == "ok" else None, rattrs,
                                              attrs["strain"]))
        return records

    # ---------------------------------------------------------------- relax
    def stage_relax(self) -> None:
        r = self.job["relax"]
        base = self._keys_with("generate", lambda rec: rec.ok and rec.attrs.get("parent", "") == "")
        if self._batch is not None:
            base = [k for k in base if k in self._batch]
        todo = sorted(set(base) - self.db.completed("relax"))
        self.log.info("relax: %d unstrained configurations to relax (%d done)", len(todo), len(base) - len(todo))
        self._farm(todo, self._relax_task, "relax")
        root_only(self.comm, self._mark_duplicates)
        self._merge()
        strains = self._strain_chain([float(s) for s in r["strains"]])
        unique = self._keys_with("relax", lambda rec: rec.ok and rec.attrs.get("parent", "") == ""
                                 and "source" not in rec.attrs)  # imported cells keep their own strain
        if self._batch is not None:
            unique = [k for k in unique if k in self._batch]
        done = self.db.completed("relax")
        todo = [k for k in sorted(unique) if any(f"{k}@{strain_key(s)}" not in done for s in strains)]
        n_todo = sum(f"{k}@{strain_key(s)}" not in done for k in todo for s in strains)
        self.log.info("relax: %d strained configurations of %d minima to relax (%d done)", n_todo, len(todo),
                      len(unique) * len(strains) - n_todo)
        self._farm(todo, self._strain_task, "relax strained")

    @staticmethod
    def _strain_chain(strains) -> list:
        """Non-zero strains in the order one task relaxes them: tensile ascending, then
        compressive descending, so each starts from (and reuses the factor of) its neighbour."""
        return sorted(s for s in strains if s > 0) + sorted((s for s in strains if s < 0), reverse=True)

    def _exact_route(self, atoms, group) -> bool:
        """Whether relaxations end in a dense factorisation that also gives ln det' and inertia."""
        from hpcvib.landscape.exact_minimum import DENSE_MAX_DOF

        method = self.job["relax"]["method"]
        small = 3 * (len(atoms) - 1) <= DENSE_MAX_DOF and group.size == 1
        if method == "exact" and not small:
            self.log.debug("relax: exact route needs one rank and <= %d unknowns; using FIRE + L-BFGS", DENSE_MAX_DOF)
        return method in ("auto", "exact") and small

    def _krylov_route(self, atoms) -> bool:
        """Whether a relaxation outside the exact route takes Newton–CG steps (O(N) memory)."""
        from hpcvib.landscape.krylov_minimum import KRYLOV_AUTO_ATOMS

        method = self.job["relax"]["method"]
        return method == "newton-krylov" or (method == "auto" and len(atoms) > KRYLOV_AUTO_ATOMS)

    def _keys_with(self, stage: str, predicate) -> list:
        def scan():
            records = self.db.read("configs", stage, with_data=False)
            return sorted(k for k, st in records.items() if predicate(st[stage]))
        return root_only(self.comm, scan)

    def _relax(self, atoms, group=None, chord=None, escape_seed=None):
        """Relax ``atoms`` to ``fmax``; returns (atoms or None, attrs, dense factor or None).

        Exact route (small cells, one rank): FIRE, then Newton/chord steps whose last Cholesky
        factorisation at the converged configuration gives the inertia and ln det' at no extra
        cost (:mod:`hpcvib.landscape.exact_minimum`); ``chord`` is a factor from a neighbouring strain.
        Otherwise FIRE + L-BFGS, or (method newton-krylov, and auto above
        :data:`~hpcvib.landscape.krylov_minimum.KRYLOV_AUTO_ATOMS` atoms) FIRE + Newton steps solved
        by preconditioned CG in O(N) memory; the inertia is then computed by the caller."""
        from hpcvib.landscape.exact_minimum import escape_saddle, newton_minimum, relax_to_minimum
        from hpcvib.landscape.krylov_minimum import newton_krylov_minimum
        from hpcvib.landscape.saddle import relax

        r = self.job["relax"]
        t = time.perf_counter()
        escape = escape_seed if r["escape_saddles"] else None
        try:
            if group is not None and self._exact_route(atoms, group):
                res = None
                if chord is not None:
                    try:
                        res = newton_minimum(atoms, self.pot, r["fmax"], chord=chord)
                    except ConvergenceError:
                        res = None
                if res is None:
                    res = relax_to_minimum(atoms, self.pot, r["fmax"], r["switch_fmax"], r["max_steps"],
                                           escape_seed=escape)
                elif res.n_negative and escape is not None:  # chord steps converged onto a saddle
                    res = escape_saddle(res, atoms, self.pot, escape, r["fmax"], r["switch_fmax"], r["max_steps"])
                attrs = {"status": "ok", "energy_eV": res.energy, "max_force_eV_A": res.max_force,
                         "n_negative": res.n_negative, "pinned_atom": res.pinned_atom, "method": "exact",
                         "factorisations": res.counts["factorisations"], "force_calls": res.counts["force_calls"],
                         "escaped_saddle": int(res.counts.get("escaped", 0))}
                if res.ln_det_prime is not None:
                    attrs["ln_det_prime"] = res.ln_det_prime
                attrs["seconds"] = time.perf_counter() - t
                return res.atoms, attrs, res.factor
            if self._krylov_route(atoms):
                out = newton_krylov_minimum(group if group is not None else self.comm, atoms, self.pot, r["fmax"],
                                            r["switch_fmax"], r["max_steps"], check_modes=0).atoms
                method = "newton-krylov"
            else:
                out = relax(atoms, self.pot, fmax=r["fmax"], steps=r["max_steps"], refine=r["newton"])
                method = "fire-lbfgs"
        except ConvergenceError as exc:
            return None, {"status": "failed", "reason": f"relaxation: {exc}", "seconds": time.perf_counter() - t}, None
        ev = self.pot.evaluate(out)
        fmax = float(np.linalg.norm(ev.forces, axis=1).max())
        attrs = {"status": "ok", "energy_eV": ev.energy, "max_force_eV_A": fmax, "method": method,
                 "seconds": time.perf_counter() - t}
        return out, attrs, None

    def _relax_record(self, key, gen_attrs, atoms, attrs, strain) -> Record:
        data = {}
        if atoms is not None:
            data = structure_data(atoms)
            data["fingerprint"] = lattice_fingerprint(atoms, self.a0 * (1.0 + strain), lattice=self.lattice)
        attrs = dict(attrs, parent=gen_attrs.get("parent", ""), strain=strain,
                     **{k: v for k, v in gen_attrs.items() if k in IMPORT_LABELS})
        if attrs.get("n_negative", 0) > 0 and attrs["status"] == "ok":
            attrs.update(status="failed", reason=f"relaxed to a stationary point with {attrs['n_negative']} "
                                                 "negative eigenvalue(s) of D, not a minimum")
        return Record("configs", key, "relax", attrs, data)

    def _relax_task(self, group, key) -> None:
        """Relax an unstrained configuration; its exact inertia (the last Cholesky factor of the
        exact route, or one sparse LDLᵀ on the group) tells a minimum from a saddle that
        symmetric starting positions often relax into: the latter is recorded as failed (its
        strained copies would be saddles too)."""
        def work():
            gen = self.db.read_record("configs", key, "generate")
            seed = [int(self.job["job"]["seed"]), zlib.crc32(key.encode())]
            atoms, attrs, _ = self._relax(atoms_from_record(gen), group, escape_seed=seed)
            return self._relax_record(key, gen.attrs, atoms, attrs, float(gen.attrs.get("strain", 0.0)))
        rec = root_only(group, work)
        if rec.ok and "n_negative" not in rec.attrs:
            self._sparse_inertia(group, rec)
        rec.attrs["ranks"] = group.size
        self._write(group, rec)

    def _strain_task(self, group, parent) -> None:
        """Relax every strained copy of one distinct minimum, in the order of
        :meth:`_strain_chain`: each starts from its neighbour's relaxed positions scaled to the
        new strain, and on the exact route its first Newton steps reuse the neighbour's
        factorisation (chord steps), so a copy costs about one factorisation. A task that was
        interrupted is redone whole, so a resumed job gives bit-identical records."""
        from hpcvib.geometry.structures import apply_isotropic_strain

        strains = self._strain_chain([float(s) for s in self.job["relax"]["strains"]])

        def work():
            gen = self.db.read_record("configs", parent, "generate")
            rel = self.db.read_record("configs", parent, "relax")
            unstrained = atoms_from_record(rel)
            parent_factor = self._parent_factor(unstrained, group)
            previous, previous_strain, chord = unstrained, 0.0, parent_factor
            records = []
            for strain in strains:
                key = f"{parent}@{strain_key(strain)}"
                if previous_strain * strain < 0:  # the compressive side starts again from the minimum
                    previous, previous_strain, chord = unstrained, 0.0, parent_factor
                start = apply_isotropic_strain(previous, (1.0 + strain) / (1.0 + previous_strain) - 1.0)
                attrs = dict(gen.attrs, key=key, parent=parent, strain=strain, variant=gen.attrs["variant"])
                seed = [int(self.job["job"]["seed"]), zlib.crc32(key.encode())]
                atoms, rattrs, factor = self._relax(start, group, chord, escape_seed=seed)
                rec = self._relax_record(key, attrs, atoms, rattrs, strain)
                rec.attrs["ranks"] = group.size
                records.append(Record("configs", key, "generate", dict(attrs, ranks=group.size),
                                      structure_data(start)))
                records.append(rec)
                if rec.ok:
                    previous, previous_strain, chord = atoms, strain, factor
            return records
        records = root_only(group, work)
        for rec in records:
            if rec.stage == "relax" and rec.ok and "n_negative" not in rec.attrs:
                self._sparse_inertia(group, rec)
            self._write(group, rec)

    def _parent_factor(self, atoms, group):
        """Dense factor of the unstrained minimum (exact route), the chord matrix of the first
        strained copy on each side; None on the sparse route."""
        from hpcvib.landscape.exact_minimum import factorise
        from hpcvib.linalg.spectral import choose_pinned_atom

        if not self._exact_route(atoms, group):
            return None
        return factorise(self.pot, atoms, choose_pinned_atom(atoms.get_masses()), exact=False)

    def _sparse_inertia(self, group, rec) -> None:
        """Inertia and ln det' of a relaxed record by one sparse factorisation on ``group``."""
        from hpcvib.linalg.hessian import assemble_hessian
        from hpcvib.linalg.spectral import log_pseudo_determinant

        t = time.perf_counter()
        pd = log_pseudo_determinant(assemble_hessian(group, atoms_from_record(rec), self.pot))
        rec.attrs["seconds"] = rec.attrs.get("seconds", 0.0) + time.perf_counter() - t
        rec.attrs["n_negative"] = pd.n_negative
        if pd.n_negative:
            rec.attrs.update(status="failed", reason=f"relaxed to a stationary point with {pd.n_negative} "
                                                     "negative eigenvalue(s) of D, not a minimum")
        else:
            rec.attrs.update(ln_det_prime=pd.ln_det_prime, pinned_atom=pd.pinned_atom)

    def _same_minimum(self, relaxed: dict):
        """The explicit symmetry check of two unstrained relaxed configurations (by key), or
        None for hosts without a lattice (amorphous: energy and fingerprint decide)."""
        if not self.a0:
            return None
        tol = float(self.job["relax"]["duplicate_position_tol"])

        def same(key_a: str, key_b: str) -> bool:
            return symmetry_equivalent(atoms_from_record(relaxed[key_a]["relax"]),
                                       atoms_from_record(relaxed[key_b]["relax"]), tol, self.a0, self.lattice)
        return same

    def _mark_duplicates(self) -> None:
        r = self.job["relax"]
        attrs = self.db.read("configs", "relax", with_data=False)
        unstrained = [k for k, st in attrs.items() if st["relax"].ok and st["relax"].attrs.get("parent", "") == ""]
        relaxed = self.db.read("configs", "relax", keys=unstrained)
        if int(self.job["job"]["batch_size"]) > 0:  # runs on the root alone: no collective here
            generated = self.db.read("configs", "generate", with_data=False)
            order = self._shuffled(sorted(k for k, st in generated.items()
                                          if st["generate"].attrs.get("parent", "") == ""))
        else:
            order = sorted(relaxed)
        entries = [(k, len(st["relax"].data["positions"]), st["relax"].attrs["energy_eV"], st["relax"].data["fingerprint"])
                   for k in order if (st := relaxed.get(k)) is not None
                   and st["relax"].ok and st["relax"].attrs.get("parent", "") == ""]
        dups = find_duplicates(entries, r["duplicate_energy_tol"], r["duplicate_fingerprint_tol"],
                               self._same_minimum(relaxed))
        for key, original in dups.items():
            rec = relaxed[key]["relax"]
            rec.attrs.update(status="duplicate", duplicate_of=original)
            self.db.write(rec)
        self.log.info("relax: %d duplicates of other minima removed, %d distinct minima",
                      len(dups), len(entries) - len(dups))

    # ---------------------------------------------------------------- thermo
    def _reference_key(self, attrs: dict) -> str:
        """Key of a configuration's perfect reference: its strain for generated cells, the host
        cell's repetitions and lattice parameter for imported ones."""
        return attrs.get("reference_key") or strain_key(float(attrs["strain"]))

    def _reference_atoms(self, key: str):
        """The perfect crystal cell of reference ``key`` (:meth:`_reference_key`)."""
        from hpcvib.geometry.structures import cubic_supercell

        imported = parse_imported_reference(key)
        if imported is not None:
            return cubic_supercell(*imported, self.symbol)
        return cubic_supercell(self.lattice, self.n, self.a0, self.symbol, strain=float(key))

    def _reference_strain(self, key: str) -> float:
        imported = parse_imported_reference(key)
        return float(key) if imported is None else imported[2] / self.a0 - 1.0

    def _references_needed(self) -> list:
        """Reference keys of the job's strains and of every relaxed configuration."""
        keys = {strain_key(s) for s in self._strains()} if "generate" in self.job.stages else set()
        keys |= set(root_only(self.comm, lambda: {self._reference_key(st["relax"].attrs) for st in
                                                  self.db.read("configs", "relax", with_data=False).values()
                                                  if st["relax"].ok}))
        return sorted(keys)

    def _strains(self) -> list:
        return sorted({0.0} | {float(s) for s in self.job["relax"]["strains"]})

    def stage_thermo(self) -> None:
        if self.has_perfect_reference:
            todo = sorted(set(self._references_needed()) - self.db.completed("thermo", "references"))
            self._farm(todo, self._reference_thermo_task, "thermo references")
        configs = self._keys_with("relax", lambda rec: rec.ok)
        todo = sorted(set(configs) - self.db.completed("thermo"))
        self.log.info("thermo: %d configurations (%d done)", len(todo), len(configs) - len(todo))
        self._farm(todo, self._thermo_task, "thermo")

    def _analyse(self, group, atoms, label):
        from hpcvib.physics.thermo import analyse_structure

        return analyse_structure(group, atoms, self.pot, label, n_modes=self.job["thermo"]["modes"],
                                 expect="minimum")

    def _reference_thermo_task(self, group, key) -> None:
        t = time.perf_counter()
        strain = self._reference_strain(key)
        atoms = self._reference_atoms(key)
        res = self._analyse(group, atoms, f"perfect cell {key}")
        attrs = {"status": "ok", "strain": strain, "n_atoms": len(atoms), "energy_eV": res.energy,
                 "ln_det_prime": res.ln_det_prime, "seconds": time.perf_counter() - t}
        data = dict(structure_data(atoms), lowest_eigenvalues=res.lowest_eigenvalues)
        self._write(group, Record("references", key, "thermo", attrs, data))

    def _stored_analysis(self, rel, key):
        """The exact harmonic data that the relax stage's last factorisation already gave (the
        same configuration, the same ln det' to round-off): no second factorisation."""
        from hpcvib.physics.thermo import StructureAnalysis

        return StructureAnalysis(key, int(rel.attrs.get("n_atoms", len(rel.data["positions"]))),
                                 float(rel.attrs["energy_eV"]), float(rel.attrs["max_force_eV_A"]),
                                 float(rel.attrs["ln_det_prime"]), int(rel.attrs["n_negative"]), np.zeros(0), None,
                                 int(rel.attrs["pinned_atom"]), {}, {"solver": "relax-stage factor"})

    def _thermo_task(self, group, key) -> None:
        from hpcvib.physics.thermo import formation_energy, formation_entropy, vibrational_entropy

        t = time.perf_counter()
        rel = root_only(group, self.db.read_record, "configs", key, "relax")
        strain = float(rel.attrs["strain"])
        ref = root_only(group, self.db.read_record, "references", self._reference_key(rel.attrs), "thermo") \
            if self.has_perfect_reference else None
        try:
            if "ln_det_prime" in rel.attrs and self.job["thermo"]["modes"] == 0:
                res = self._stored_analysis(rel, key)
            else:
                res = self._analyse(group, atoms_from_record(rel), key)
        except NotAMinimumError as exc:  # raised on every rank of the group
            attrs = {"strain": strain, "status": "failed", "reason": str(exc)}
            lowest = np.zeros(0)
        else:
            lowest = res.lowest_eigenvalues
            attrs = {"strain": strain, "status": "ok", "n_negative": res.n_negative, "ln_det_prime": res.ln_det_prime,
                     "energy_eV": res.energy, "pinned_atom": res.pinned_atom}
        if ref is not None and attrs["status"] == "ok":
            n, nb = res.n_atoms, int(ref.attrs["n_atoms"])
            s_f, conv = formation_entropy(res.ln_det_prime, n, ref.attrs["ln_det_prime"], nb)
            attrs.update(S_f_kB=s_f, S_f_convention=conv,
                         E_f_eV=formation_energy(res.energy, n, ref.attrs["energy_eV"], nb))
        temperature = float(self.job["thermo"]["temperature"])
        if temperature > 0 and attrs["status"] == "ok":
            attrs["S_vib_kB"] = vibrational_entropy(res.ln_det_prime, res.n_atoms, temperature)
            if ref is not None:
                s_t, conv_t = formation_entropy(res.ln_det_prime, res.n_atoms, ref.attrs["ln_det_prime"],
                                                int(ref.attrs["n_atoms"]), temperature)
                attrs.update(S_f_T_kB=s_t, S_f_T_convention=conv_t)
        data = {"lowest_eigenvalues": lowest}
        if self.job["thermo"]["local"] and ref is not None and attrs["status"] == "ok":
            data["dS_local"] = self._local_formation_entropies(group, rel, ref)
            attrs["sum_dS_local_kB"] = float(data["dS_local"].sum())
        attrs.update(seconds=time.perf_counter() - t, ranks=group.size)
        self._write(group, Record("configs", key, "thermo", attrs, data))

    def _local_formation_entropies(self, group, rel, ref) -> np.ndarray:
        """Exact ΔS_i (k_B, Eq. 20 convention; :mod:`hpcvib.physics.local_entropy`) of every atom
        of a relaxed record, by the job's ``local_route``. Collective over ``group``."""
        from hpcvib.linalg.hessian import assemble_hessian
        from hpcvib.workflow.local_entropies import local_decomposition

        atoms = atoms_from_record(rel)
        dh = assemble_hessian(group, atoms, self.pot)
        dec = local_decomposition(dh, self.pot, atoms, self.job["thermo"]["local_route"],
                                  tol=float(self.job["thermo"]["local_tol"]))
        return dec.formation(float(ref.attrs["ln_det_prime"]), int(ref.attrs["n_atoms"]))

    # ---------------------------------------------------------------- descriptors
    def descriptor_settings(self):
        from hpcvib.learning.descriptors import DescriptorSettings

        d = self.job["descriptors"]
        rcut = float(d["rcut"]) or self.pot.descriptor_cutoff
        return DescriptorSettings(jmax=float(d["jmax"]), rcut=rcut, full=bool(d["full"]))

    @property
    def has_perfect_reference(self) -> bool:
        """Crystal (bcc, fcc) hosts have a perfect reference cell per strain (S_f, ΔD); amorphous
        ones do not."""
        return self.job["system"]["lattice"] in ("bcc", "fcc")

    def stage_descriptors(self) -> None:
        if self.has_perfect_reference:
            todo = sorted(set(self._references_needed()) - self.db.completed("descriptors", "references"))
            self._farm(todo, self._reference_descriptor_task, "descriptors references")
        ok_thermo = set(self._keys_with("thermo", lambda rec: rec.ok)) if "thermo" in self.job.stages else None
        configs = [k for k in self._keys_with("relax", lambda rec: rec.ok) if ok_thermo is None or k in ok_thermo]
        todo = sorted(set(configs) - self.db.completed("descriptors"))
        self.log.info("descriptors: %d configurations (%d done)", len(todo), len(configs) - len(todo))
        self._farm(todo, self._descriptor_task, "descriptors")

    def _reference_descriptor_task(self, group, key) -> None:
        from hpcvib.learning.descriptors import descriptor_sums

        t = time.perf_counter()
        strain = self._reference_strain(key)
        settings = self.descriptor_settings()
        sums = descriptor_sums(group, self._reference_atoms(key), settings)
        attrs = {"status": "ok", "strain": strain, "n_atoms": sums.n_atoms, "settings": settings.as_dict(),
                 "seconds": time.perf_counter() - t}
        self._write(group, Record("references", key, "descriptors", attrs, {"D": sums.D, "DD": sums.DD}))

    def _descriptor_task(self, group, key) -> None:
        from hpcvib.learning.descriptors import descriptor_excess, descriptor_sums

        t = time.perf_counter()
        settings = self.descriptor_settings()
        rel = root_only(group, self.db.read_record, "configs", key, "relax")
        strain = float(rel.attrs["strain"])
        sums = descriptor_sums(group, atoms_from_record(rel), settings, keep_per_atom=self.job["descriptors"]["per_atom"])
        data = {"D": sums.D, "DD": sums.DD}
        if self.has_perfect_reference:
            ref = root_only(group, self.db.read_record, "references", self._reference_key(rel.attrs), "descriptors")
            d_d, d_dd = descriptor_excess(sums, ref.data["D"], ref.data["DD"], int(ref.attrs["n_atoms"]))
            data.update(dD=d_d, dDD=d_dd)
        if sums.per_atom is not None:
            data["per_atom"] = sums.per_atom
        attrs = {"status": "ok", "strain": strain, "settings": settings.as_dict(), "seconds": time.perf_counter() - t,
                 "ranks": group.size}
        self._write(group, Record("configs", key, "descriptors", attrs, data))

    # ---------------------------------------------------------------- amorphous inherent states
    def stage_amorphous(self) -> None:
        a = self.job["amorphous"]
        keys = [f"aSi{a['n_atoms']}-q{i:03d}" for i in range(a["samples"])]
        todo = sorted(set(keys) - self.db.completed("relax"))
        self.log.info("amorphous: %d melt-quench samples to make (%d done)", len(todo), len(keys) - len(todo))
        self._farm(todo, self._amorphous_task, "melt-quench")

    def _amorphous_task(self, group, key) -> None:
        from hpcvib.landscape.amorphous import melt_quench, starting_cell, structure_report

        a = self.job["amorphous"]
        index = int(key.rsplit("q", 1)[1])

        def work():
            t = time.perf_counter()
            seed = self.job["job"]["seed"] * AMORPHOUS_SEED_STRIDE + index
            start = starting_cell(a["n_atoms"], a["density"], self.symbol, seed=seed)
            quenched, history = melt_quench(start, self.pot, seed=seed,
                                            t_melt=a["t_melt"], melt_ps=a["melt_ps"], t_anneal=a["t_anneal"],
                                            cool_ps=a["cool_ps"], anneal_ps=a["anneal_ps"],
                                            timestep_fs=a["timestep_fs"])
            report = structure_report(quenched, self.pot, a["bond_cutoff"])
            ev = self.pot.evaluate(quenched)
            labels = {"key": key, "kind": "A", "size": a["n_atoms"], "motif": "amorphous", "variant": index,
                      "shape_index": index, "strain": 0.0, "parent": "", "status": "ok"}
            gen = Record("configs", key, "generate", dict(labels, history=history), structure_data(start))
            rel = Record("configs", key, "relax", {"status": "ok", "parent": "", "strain": 0.0, "energy_eV": ev.energy,
                                                   "max_force_eV_A": float(np.linalg.norm(ev.forces, axis=1).max()),
                                                   "structure_report": report, "seconds": time.perf_counter() - t},
                         structure_data(quenched))
            self.log.info("%s: E/N = %.4f eV, coordination defects %d, bond angles %.1f ± %.1f°", key,
                          report["energy_eV_per_atom"], report["coordination_defects"],
                          report["bond_angle_mean_deg"], report["bond_angle_std_deg"])
            return gen, rel
        for rec in root_only(group, work):
            rec.attrs["ranks"] = group.size
            self._write(group, rec)

    # ---------------------------------------------------------------- saddle searches
    def stage_saddles(self) -> None:
        n = self.job["saddles"]["searches"]
        minima = self._keys_with("relax", lambda rec: rec.ok and rec.attrs.get("parent", "") == "")
        tasks = [(m, i) for m in minima for i in range(n)]
        done = self.db.completed("event", "events")
        todo = [t for t in tasks if f"{t[0]}-e{t[1]:04d}" not in done]
        self.log.info("saddles: %d searches from %d minima (%d done)", len(todo), len(minima), len(tasks) - len(todo))
        self._farm(todo, self._saddle_task, "saddle searches")
        root_only(self.comm, self._mark_duplicate_events)
        self._merge()

    def artn_settings(self):
        from hpcvib.landscape.artn import ArtnSettings

        sj = self.job["saddles"]
        return ArtnSettings(fmax=sj["fmax"], newton=sj["newton"], activation=sj["activation"],
                            mode_solver=sj["mode_solver"], activation_radius=sj["activation_radius"],
                            initial_displacement=sj["initial_displacement"],
                            eigenvalue_threshold=sj["eigenvalue_threshold"],
                            max_activation_steps=sj["max_activation_steps"],
                            max_convergence_steps=sj["max_convergence_steps"])

    def _saddle_task(self, group, task) -> None:
        import zlib

        from hpcvib.landscape.artn import SaddleSearch, activation_atom
        from hpcvib.learning.descriptors import descriptor_sums

        minimum_key, index = task
        key = f"{minimum_key}-e{index:04d}"
        rel = root_only(group, self.db.read_record, "configs", minimum_key, "relax")
        minimum = atoms_from_record(rel)
        seed = zlib.crc32(f"{self.job['job']['seed']}:{key}".encode())
        search = SaddleSearch(group, self.pot, self.artn_settings())
        # the searches of one minimum visit every candidate atom once before any twice
        atom = activation_atom(search.activation_pool(minimum), index,
                               zlib.crc32(f"{self.job['job']['seed']}:{minimum_key}".encode()))
        res = search.search(minimum, seed=seed, atom=atom)
        attrs = {"status": res.status, "minimum": minimum_key, "strain": float(rel.attrs.get("strain", 0.0)),
                 **{k: v for k, v in res.summary().items() if isinstance(v, (int, float, str)) and k != "status"},
                 "counts": res.counts, "energies": res.energies, "ranks": group.size}
        data = {}
        if res.status == "ok":
            settings = self.descriptor_settings()
            d_min = descriptor_sums(group, minimum, settings)
            d_sad = descriptor_sums(group, res.saddle, settings)
            attrs.update(nu_THz=float(np.exp(res.ln_nu_THz)), settings=settings.as_dict())
            data = {"saddle_positions": res.saddle.positions, "final_positions": res.final.positions,
                    "D_min": d_min.D, "D_saddle": d_sad.D}
        self._write(group, Record("events", key, "event", attrs, data))

    def _mark_duplicate_events(self) -> None:
        from hpcvib.landscape.artn import duplicate_events

        sj = self.job["saddles"]
        events = self.db.read("events", "event")
        by_minimum: dict = {}
        for key, st in sorted(events.items()):
            ev = st["event"]
            if ev.ok:
                by_minimum.setdefault(ev.attrs["minimum"], []).append(
                    (key, ev.attrs["delta_E_eV"], ev.attrs["max_displacement_A"]))
        n_dup = 0
        for entries in by_minimum.values():
            for key, original in duplicate_events(entries, sj["duplicate_energy_tol"],
                                                  sj["duplicate_displacement_tol"]).items():
                rec = events[key]["event"]
                rec.attrs.update(status="duplicate", duplicate_of=original)
                self.db.write(rec)
                n_dup += 1
        n_ok = sum(len(v) for v in by_minimum.values()) - n_dup
        self.log.info("saddles: %d distinct connected events, %d duplicates removed", n_ok, n_dup)
        if sj["add_final_minima"]:
            self._add_final_minima(events)

    def _add_final_minima(self, events) -> None:
        """Distinct final minima of the events become configurations (key ``<event>-final``,
        parent = the initial minimum), unless they duplicate a minimum already in the database
        (:mod:`hpcvib.landscape.fingerprint`, bcc hosts); later stages then treat them like any other."""
        r = self.job["relax"]
        relaxed = self.db.read("configs", "relax")
        known = [(k, len(st["relax"].data["positions"]), st["relax"].attrs["energy_eV"], st["relax"].data["fingerprint"])
                 for k, st in sorted(relaxed.items()) if st["relax"].ok and "fingerprint" in st["relax"].data]
        structures = {k: atoms_from_record(st["relax"]) for k, st in relaxed.items() if st["relax"].ok}
        tol = float(r["duplicate_position_tol"])

        def same(key_a: str, key_b: str) -> bool:
            return symmetry_equivalent(structures[key_a], structures[key_b], tol, self.a0, self.lattice)
        added = 0
        for key, st in sorted(events.items()):
            ev = st["event"]
            if ev.attrs.get("status") != "ok" or f"{key}-final" in relaxed:
                continue
            parent = self.db.read_record("configs", ev.attrs["minimum"], "relax")
            final = atoms_from_record(parent)
            final.positions = ev.data["final_positions"]
            fp = lattice_fingerprint(final, self.a0, lattice=self.lattice) if self.a0 else np.zeros(0)
            entry = (f"{key}-final", len(final), ev.attrs["energies"]["final"], fp)
            structures[entry[0]] = final
            if self.a0 and entry[0] in find_duplicates(known + [entry], r["duplicate_energy_tol"],
                                                       r["duplicate_fingerprint_tol"], same):
                continue
            known.append(entry)
            gen = self.db.read_record("configs", ev.attrs["minimum"], "generate")
            labels = dict(gen.attrs, key=entry[0], motif="artn", parent="", event=key, strain=0.0)
            self.db.write(Record("configs", entry[0], "generate", labels, structure_data(final)))
            data = dict(structure_data(final), fingerprint=fp)
            self.db.write(Record("configs", entry[0], "relax", {"status": "ok", "parent": "", "strain": 0.0,
                                                                "energy_eV": entry[2], "from_event": key}, data))
            added += 1
        self.log.info("saddles: %d new distinct minima added as configurations", added)

    # ---------------------------------------------------------------- fit and report
    def stage_fit(self) -> None:
        from hpcvib.learning.training import fit_database_models

        fit_database_models(self.comm, self.db, self.job, self.pot)

    def stage_report(self) -> None:
        from hpcvib.learning.report import write_report

        path = root_only(self.comm, write_report, self.db, self.job)
        self.log.info("report: %s", path)


#: job stage → function(pipeline) that runs it (the built-ins are the ``stage_<name>`` methods);
#: add one with :func:`register_stage`
STAGE_RUNNERS = {name: getattr(Pipeline, f"stage_{name}") for name in jobfile.STAGE_TABLES}


def register_stage(name: str, keys: dict, run, after: str) -> None:
    """A new job stage in one call: its job-file table ``[name]`` with ``keys``
    (name → :class:`hpcvib.workflow.jobfile.Key`, validated and defaulted like every table), run by
    ``run(pipeline)`` after the stage ``after`` when a job file has the table. ``run`` writes
    its records with ``pipeline._write`` / farms tasks with ``pipeline._farm``; a record in
    ``configs/<key>/<name>`` shows up in ``status``, ``export`` and the summary."""
    jobfile.register_stage_table(name, keys, after)
    STAGE_RUNNERS[name] = run


def summary_rows(db: Database) -> dict:
    """Counts per stage and status, failure reasons, and throughput (configurations per
    core-hour per stage, from the per-task wall times and group sizes)."""
    configs = db.read("configs", with_data=False)
    counts: dict = {}
    reasons: dict = {}
    seconds: dict = {}
    for key, stages in configs.items():
        for st, rec in stages.items():
            status = rec.attrs.get("status", "ok")
            counts.setdefault(st, {}).setdefault(status, 0)
            counts[st][status] += 1
            if status == "failed":
                reasons[key] = f"{st}: {rec.attrs.get('reason', '?')}"
            if "seconds" in rec.attrs:
                seconds.setdefault(st, []).append(float(rec.attrs["seconds"]) * int(rec.attrs.get("ranks", 1)))
    event_counts: dict = {}
    for key, stages in db.read("events", with_data=False).items():
        ev = stages.get("event")
        if ev is not None:
            status = ev.attrs.get("status", "ok")
            event_counts[status] = event_counts.get(status, 0) + 1
            if "seconds" in ev.attrs:
                seconds.setdefault("saddles", []).append(float(ev.attrs["seconds"]) * int(ev.attrs.get("ranks", 1)))
    if event_counts:
        counts["saddles"] = event_counts
    prov = db.provenance()
    return {"database": db.path, "potential": prov.get("potential"), "hpcvib_version": prov.get("hpcvib_version"),
            "counts": counts, "failures": reasons,
            "mean_task_core_seconds": {st: float(np.mean(v)) for st, v in seconds.items()},
            "configs_per_core_hour": (3600.0 / sum(float(np.mean(seconds[st])) for st in ("relax", "thermo", "descriptors"))
                                      if all(st in seconds for st in ("relax", "thermo", "descriptors")) else None),
            "runs": prov.get("runs", [])}


def format_summary(summary: dict) -> str:
    lines = [f"database {summary['database']} (potential {summary['potential']}, hpcvib {summary['hpcvib_version']})",
             f"{'stage':<12} {'ok':>7} {'failed':>7} {'duplicate':>9} {'core-s/task':>11} {'per core-hour':>14}"]
    for st in ("generate", "relax", "thermo", "descriptors", "saddles"):
        if st == "saddles" and st not in summary["counts"]:
            continue
        c = summary["counts"].get(st, {})
        sec = summary["mean_task_core_seconds"].get(st)
        rate = f"{3600.0 / sec:14.0f}" if sec else f"{'-':>14}"
        lines.append(f"{st:<12} {c.get('ok', 0):>7} {c.get('failed', 0):>7} {c.get('duplicate', 0):>9} "
                     f"{(f'{sec:11.2f}' if sec else f'{chr(45):>11}')} {rate}")
    if summary.get("configs_per_core_hour"):
        lines.append(f"relax + thermo + descriptors: {summary['configs_per_core_hour']:.0f} configurations per core-hour")
    if summary["failures"]:
        lines.append("failures:")
        lines += [f"  {k}: {v}" for k, v in sorted(summary["failures"].items())[:20]]
        if len(summary["failures"]) > 20:
            lines.append(f"  ... {len(summary['failures']) - 20} more")
    for run in summary["runs"]:
        secs = ", ".join(f"{k} {v:.1f} s" for k, v in (run.get("seconds") or {}).items())
        lines.append(f"run: {run.get('job')} on {run.get('ranks')} rank(s): {secs}")
    return "\n".join(lines)
