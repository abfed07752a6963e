"""Job files (TOML): one table per stage, validated against a schema with errors that name the
file, the table and the key.

A stage runs when its table is present (``[generate]``, ``[relax]``, ``[thermo]``,
``[descriptors]``, ``[fit]``, ``[report]``); ``[job]`` and ``[system]`` are always read.
Relative paths are relative to the directory the job is run from.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

from hpcvib.errors import InputError

REQUIRED = object()
#: (table, key) of values that are paths: ``~`` and environment variables (``$SCRATCH/db.h5``)
#: are expanded where the job is read; ``[system] potential`` is expanded by every rank in its
#: own environment when it loads the potential (:func:`expand_path`)
PATH_KEYS = (("job", "database"), ("fit", "output"), ("report", "output"))


def expand_path(value: str) -> str:
    """``~`` and environment variables of a path expanded in this process's environment."""
    return os.path.expandvars(os.path.expanduser(value))
STAGE_TABLES = ("generate", "import", "amorphous", "relax", "thermo", "descriptors", "saddles", "fit", "report")


@dataclass(frozen=True)
class Key:
    kind: type | tuple
    default: object
    check: object = None  # callable(value) -> error message or None
    doc: str = ""


def _positive(v):
    return None if v > 0 else "must be > 0"


def _non_negative(v):
    return None if v >= 0 else "must be >= 0"


def _sizes(v):
    return None if all(isinstance(k, int) and 1 <= k <= 8 for k in v) else "entries must be integers 1..8"


def _one_of(*allowed):
    def check(v):
        values = v if isinstance(v, list) else [v]
        bad = [x for x in values if x not in allowed]
        return None if not bad else f"{bad[0]!r} is not one of {', '.join(map(repr, allowed))}"
    return check


def _file_patterns(v):
    return None if all(isinstance(x, str) and x for x in v) else "entries must be non-empty paths or globs"


def _element_list(v):
    return None if all(isinstance(x, str) and x.isalpha() for x in v) else "entries must be element symbols"


def _strains(v):
    return None if all(isinstance(x, (int, float)) and -0.2 < x < 0.2 for x in v) else \
        "strains must be numbers in (-0.2, 0.2) (fractions, 0.01 = 1 %)"


FAMILY_KEYS = {"kind": str, "sizes": list, "orientations": list, "shell_radius": int, "max_clusters": int,
               "loop_burgers": str, "loop_habit": str}
#: largest prismatic loop a family may ask for (defects)
MAX_LOOP_SIZE = 100000


def _families(v):
    """Each family: a table with kind 'V' or 'I', sizes 1..8, optional orientations
    (110, 111, mixed, crowdion), shell_radius 1..5 and max_clusters >= 0."""
    for i, fam in enumerate(v):
        where = f"families[{i}]"
        if not isinstance(fam, dict):
            return f"{where} must be a table"
        for key, value in fam.items():
            if key not in FAMILY_KEYS:
                return f"{where}: unknown key {key!r} (allowed: {', '.join(FAMILY_KEYS)})"
            if not isinstance(value, FAMILY_KEYS[key]) or isinstance(value, bool):
                return f"{where}: {key} must be of type {FAMILY_KEYS[key].__name__}"
        if fam.get("kind") not in ("V", "I"):
            return f"{where}: kind must be 'V' or 'I'"
        if "loop_burgers" in fam or "loop_habit" in fam:
            problem = _loop_family(fam)
            if problem:
                return f"{where}: {problem}"
            continue
        if not fam.get("sizes") or _sizes(fam["sizes"]):
            return f"{where}: sizes must be a non-empty list of integers 1..8"
        bad = [o for o in fam.get("orientations", []) if o not in ("110", "111", "mixed", "crowdion")]
        if bad:
            return f"{where}: orientation {bad[0]!r} is not one of '110', '111', 'mixed', 'crowdion'"
        if not 1 <= fam.get("shell_radius", 2) <= 5:
            return f"{where}: shell_radius must be 1..5"
        if fam.get("max_clusters", 0) < 0:
            return f"{where}: max_clusters must be >= 0"
    return None


def _loop_family(fam) -> str | None:
    """What is wrong with a prismatic-loop family (None when nothing)."""
    from hpcvib.errors import InputError
    from hpcvib.geometry.loops import loop_rows

    if "loop_burgers" not in fam:
        return "loop_habit needs loop_burgers ('111' or '100')"
    extra = [k for k in ("orientations", "shell_radius", "max_clusters") if k in fam]
    if extra:
        return f"{extra[0]} does not apply to a loop family"
    sizes = fam.get("sizes") or []
    if not sizes or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= MAX_LOOP_SIZE for x in sizes):
        return f"sizes must be a non-empty list of integers 1..{MAX_LOOP_SIZE}"
    try:
        loop_rows(1, fam["loop_burgers"], fam.get("loop_habit"))
    except InputError as exc:
        return str(exc)
    return None


def _fractions(v):
    return None if all(isinstance(x, (int, float)) and 0 < x < 1 for x in v) else "fractions must be in (0, 1)"


SCHEMA: dict[str, dict[str, Key]] = {
    "job": {
        "name": Key(str, "job", doc="name used in logs and the report"),
        "database": Key(str, REQUIRED, doc="HDF5 database path"),
        "group_size": Key(int, 1, _positive, "MPI ranks per configuration (task-farm group size)"),
        "seed": Key(int, 0, _non_negative, "seed of every random choice"),
        "batch_size": Key(int, 0, _non_negative, "> 0: run relax, thermo and descriptors batch by batch "
                          "of this many generated configurations (complete results early in long jobs)"),
    },
    "system": {
        "potential": Key(str, REQUIRED, doc="built-in name or potential file"),
        "lattice": Key(str, "bcc", _one_of("bcc", "fcc", "amorphous"),
                       "host lattice (amorphous: [amorphous] makes it; fcc: imported structures only)"),
        "symbol": Key(str, "", doc="chemical symbol of the host (default: the potential's first species)"),
        "cell": Key(int, 8, lambda v: None if v >= 3 else "must be >= 3", "cell size n: (n a0)^3"),
        "a0": Key((float, int), 0.0, _non_negative, "lattice parameter, Å (0: from the potential)"),
    },
    "generate": {
        "vacancies": Key(list, [1, 2, 3, 4], _sizes, "vacancy cluster sizes"),
        "interstitials": Key(list, [1, 2, 3, 4], _sizes, "self-interstitial cluster sizes"),
        "orientations": Key(list, ["110", "111"], _one_of("110", "111"), "dumbbell axes"),
        "crowdions": Key(bool, True, doc="add the <111> crowdion (with I1)"),
        "shell_radius": Key(int, 2, lambda v: None if 1 <= v <= 5 else "must be 1..5",
                            "neighbour shell that connects cluster sites"),
        "max_shapes": Key(int, 0, _non_negative, "keep the first shapes per family (0: all)"),
        "families": Key(list, [], _families, "cluster families, e.g. {kind = \"V\", sizes = [4], "
                        "shell_radius = 5} or {kind = \"I\", sizes = [3], orientations = [\"mixed\"], "
                        "max_clusters = 500}; when given, replaces vacancies/interstitials/orientations/"
                        "crowdions/shell_radius/max_shapes"),
        "variants": Key(int, 0, _non_negative, "randomised variants per shape"),
        "displacement": Key((float, int), 0.1, _non_negative, "std of random displacements, Å"),
        "displacement_radius": Key((float, int), 4.0, _positive, "radius of randomised atoms, Å"),
    },
    "import": {
        "files": Key(list, [], _file_patterns, "structure files or globs (extxyz, LAMMPS data/dump, POSCAR, ...); "
                     "a multi-frame file gives one configuration per frame; extxyz info 'family' labels it"),
        "events": Key(list, [], _file_patterns, "events: files or globs of 2 or 3 frames each — minimum, first-order "
                      "saddle[, final minimum] (hpcvib saddle -o and export --events write them) — or directories "
                      "with reactant / saddle [/ product] files (eOn's layout; also min / sad / final), or "
                      "ARTn directories of numbered minNNNN / sadNNNN files (paired by events.list, else by number)"),
        "format": Key(str, "", doc="ASE format when the suffix does not tell (e.g. lammps-dump-text)"),
        "types": Key(list, [], _element_list, "element of each LAMMPS atom type, in type order"),
        "relaxed": Key(bool, True, doc="the structures are relaxed minima: forces are checked against "
                       "force_tol, not relaxed (false: a [relax] table relaxes them)"),
        "force_tol": Key((float, int), 1e-3, _positive, "eV/Å, largest force of a structure imported as relaxed"),
    },
    "amorphous": {
        "samples": Key(int, 1, _positive, "independent inherent states (melt-quench runs)"),
        "n_atoms": Key(int, 216, lambda v: None if v >= 8 else "must be >= 8", "atoms per cell"),
        "density": Key((float, int), 2.192, _positive, "g/cm^3"),
        "t_melt": Key((float, int), 2300.0, _positive, "K"),
        "melt_ps": Key((float, int), 5.0, _non_negative, "ps at t_melt (paper: 20 ns)"),
        "cool_ps": Key((float, int), 5.0, _non_negative, "ps of linear cooling to t_anneal"),
        "t_anneal": Key((float, int), 700.0, _positive, "K"),
        "anneal_ps": Key((float, int), 10.0, _non_negative, "ps at t_anneal (paper: 100 ns)"),
        "timestep_fs": Key((float, int), 1.0, _positive, "fs"),
        "bond_cutoff": Key((float, int), 2.9, _positive, "Å, for coordination statistics"),
    },
    "relax": {
        "fmax": Key((float, int), 1e-6, _positive, "force tolerance, eV/Å"),
        "max_steps": Key(int, 5000, _positive, "optimiser steps per stage"),
        "strains": Key(list, [-0.01, 0.0, 0.01, 0.02, 0.03], _strains, "isotropic strains"),
        "newton": Key(bool, False, doc="finish with exact-Hessian Newton steps to 1e-9 eV/Å"),
        "method": Key(str, "auto", _one_of("auto", "exact", "fire-lbfgs", "newton-krylov"),
                      "auto: 'exact' for cells small enough for a dense factorisation (FIRE, then "
                      "Newton/chord steps whose last Cholesky factor gives the inertia and ln det'), "
                      "'newton-krylov' above 20 000 atoms (FIRE, then Newton steps solved by "
                      "ICC-preconditioned CG: O(N) memory), else FIRE + L-BFGS; a separate "
                      "factorisation then gives the inertia"),
        "escape_saddles": Key(bool, False, doc="exact route: a relaxation that ends on a saddle (a symmetric "
                              "start, or a strained copy whose minimum became unstable) is pushed off it by a "
                              "seeded 0.05 Å displacement and relaxed again (record: escaped_saddle = 1)"),
        "switch_fmax": Key((float, int), 1e-2, _positive, "eV/Å: FIRE hands over to Newton steps here"),
        "duplicate_energy_tol": Key((float, int), 1e-4, _positive, "eV"),
        "duplicate_fingerprint_tol": Key((float, int), 1e-3, _positive, "Å"),
        "duplicate_position_tol": Key((float, int), 1e-2, _positive,
                                      "Å: duplicates map atom for atom onto each other by a point "
                                      "operation of the cell and a translation within this distance"),
    },
    "thermo": {
        "modes": Key(int, 0, _non_negative, "lowest eigenpairs to store"),
        "temperature": Key((float, int), 0.0, _non_negative, "K; > 0 adds S_vib and Eq. 19"),
        "local": Key(bool, False, doc="also the exact per-atom formation entropies ΔS_i of every atom (they sum "
                     "to S_f, Eq. 20), stored as dS_local and exported as an extxyz array"),
        "local_route": Key(str, "auto", lambda v: None if v in ("auto", "dense", "quadrature") else
                           "must be auto, dense or quadrature", "dense: every eigenpair (≤ 4 000 atoms); "
                           "quadrature: Lanczos Gauss/Gauss–Radau brackets, O(N) memory; auto: dense up to 2 000 atoms"),
        "local_tol": Key((float, int), 1e-8, _positive, "k_B: bound on the error of each ΔS_i (quadrature route)"),
    },
    "descriptors": {
        "jmax": Key((float, int), 4, lambda v: None if 0 < v <= 6 and (2 * v) % 1 == 0 else "must be a half-integer 0.5..6",
                    "bispectrum jmax"),
        "rcut": Key((float, int), 0.0, _non_negative, "cut-off, Å (0: the potential's default)"),
        "full": Key(bool, False, doc="full (j1, j2, j) set instead of the diagonal one"),
        "per_atom": Key(bool, False, doc="store per-atom descriptors"),
    },
    "saddles": {
        "searches": Key(int, 20, _positive, "saddle searches per minimum"),
        "activation": Key(str, "defect", _one_of("defect", "random"),
                          "defect: start at atoms whose energy or coordination differs from the host's "
                          "(hpcvib.landscape.artn.activation_candidates); random: any atom"),
        "fmax": Key((float, int), 1e-7, _positive, "saddle force tolerance, eV/Å (paper 1e-7)"),
        "newton": Key(bool, True, doc="exact-Hessian steps (min-mode following, or Newton near the saddle)"),
        "mode_solver": Key(str, "dense", _one_of("dense", "slepc"),
                           "dense: one shifted factor per step gives mode and step (one-rank groups, "
                           "≤ 4000 unknowns); slepc: SLEPc modes and ARTn steps"),
        "activation_radius": Key((float, int), 3.0, _positive, "Å"),
        "initial_displacement": Key((float, int), 0.1, _positive, "Å, largest initial atomic displacement"),
        "eigenvalue_threshold": Key((float, int), -2e-3, lambda v: None if v < 0 else "must be < 0",
                                    "λ1 of D that ends the activation, eV/(Å² amu)"),
        "max_activation_steps": Key(int, 40, _positive, ""),
        "max_convergence_steps": Key(int, 100, _positive, "before the search is recorded as failed"),
        "duplicate_energy_tol": Key((float, int), 1e-3, _positive, "eV"),
        "duplicate_displacement_tol": Key((float, int), 0.02, _positive, "Å, most displaced atom"),
        "add_final_minima": Key(bool, False, doc="add new distinct final minima as configurations"),
    },
    "fit": {
        "models": Key(list, ["linear", "eqml"], _one_of("linear", "eqml"), "models fitted to S_f"),
        "test_fractions": Key(list, [0.1, 0.3, 0.5, 0.7, 0.9], _fractions, "learning-curve test fractions"),
        "splits": Key(int, 100, _positive, "random splits per test fraction"),
        "per_strain": Key(bool, False, doc="one S_f model per strain class (interpolated between classes)"),
        "output": Key(str, "models", doc="directory for saved models"),
    },
    "report": {
        "output": Key(str, "report", doc="directory for report.md and figures"),
    },
}


def register_stage_table(name: str, keys: dict, after: str) -> None:
    """Add the job-file table ``[name]`` (its keys: name → :class:`Key`), a stage run after the
    stage ``after`` (see :func:`hpcvib.workflow.pipeline.register_stage`)."""
    global STAGE_TABLES
    if name in SCHEMA:
        raise ValueError(f"job-file table [{name}] exists already")
    if after not in STAGE_TABLES:
        raise ValueError(f"unknown stage {after!r} (stages: {', '.join(STAGE_TABLES)})")
    SCHEMA[name] = dict(keys)
    i = STAGE_TABLES.index(after) + 1
    STAGE_TABLES = STAGE_TABLES[:i] + (name,) + STAGE_TABLES[i:]


class Job(dict):
    """Validated job: ``job[table][key]``; ``job.stages`` lists the stage tables present."""

    path: str
    stages: tuple


def _type_ok(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def validate(raw: dict, path: str) -> Job:
    """Check ``raw`` (parsed TOML) against :data:`SCHEMA`; fill defaults."""
    unknown = [t for t in raw if t not in SCHEMA]
    if unknown:
        raise InputError(f"{path}: unknown table [{unknown[0]}] (known: {', '.join(SCHEMA)})")
    job = Job()
    for table, keys in SCHEMA.items():
        given = raw.get(table, {})
        if not isinstance(given, dict):
            raise InputError(f"{path}: [{table}] must be a table")
        for k in given:
            if k not in keys:
                raise InputError(f"{path}: unknown key {k!r} in [{table}] (known: {', '.join(keys)})")
        values = {}
        for k, spec in keys.items():
            if k not in given:
                if spec.default is REQUIRED and (table in ("job", "system")):
                    raise InputError(f"{path}: [{table}] needs {k!r} ({spec.doc})")
                values[k] = spec.default
                continue
            v = given[k]
            if not _type_ok(v, spec.kind):
                want = spec.kind.__name__ if isinstance(spec.kind, type) else " or ".join(t.__name__ for t in spec.kind)
                raise InputError(f"{path}: [{table}] {k} = {v!r} must be {want}")
            problem = spec.check(v) if spec.check else None
            if problem:
                raise InputError(f"{path}: [{table}] {k} = {v!r}: {problem}")
            values[k] = v
        job[table] = values
    for table, key in PATH_KEYS:
        if table in job and isinstance(job[table].get(key), str):
            job[table][key] = expand_path(job[table][key])
    job.path = path
    job.stages = tuple(t for t in STAGE_TABLES if t in raw)
    if "generate" in job.stages and "amorphous" in job.stages:
        raise InputError(f"{path}: [generate] (bcc defects) and [amorphous] exclude each other")
    if "amorphous" in job.stages and job["system"]["lattice"] != "amorphous":
        raise InputError(f"{path}: [amorphous] needs lattice = \"amorphous\" in [system]")
    if "generate" in job.stages and job["system"]["lattice"] == "fcc":
        raise InputError(f"{path}: [generate] builds bcc defect clusters; an fcc host takes [import]ed structures")
    if not job.stages:
        raise InputError(f"{path}: no stage table ({', '.join(STAGE_TABLES)})")
    if "import" in job.stages and not (job["import"]["files"] or job["import"]["events"]):
        raise InputError(f"{path}: [import] needs files = [\"...\"] or events = [\"...\"] (files or globs)")
    return job


def load_job(path: str) -> Job:
    """Parse and validate a TOML job file."""
    if not os.path.exists(path):
        raise InputError(f"{path}: job file does not exist")
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    return validate(raw, path)


def describe_schema() -> str:
    """Markdown table of every key (for the README and ``hpcvib run --describe``)."""
    lines = ["| table | key | default | meaning |", "|---|---|---|---|"]
    for table, keys in SCHEMA.items():
        for k, spec in keys.items():
            default = "required" if spec.default is REQUIRED else repr(spec.default)
            lines.append(f"| [{table}] | `{k}` | {default} | {spec.doc} |")
    return "\n".join(lines)
