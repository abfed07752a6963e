"""The database pipeline: job files, the HDF5 database, duplicates, strain, task farm vs serial,
kill-and-resume, and the fit/predict/report/status/export commands on a real (small) database.

The small job uses (4 a0)³ bcc Fe cells (128 sites) so the whole pipeline runs in seconds."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mpi4py import MPI

from hpcvib.database import Database, Record, atoms_from_record
from hpcvib.errors import InputError
from hpcvib.workflow.jobfile import load_job
from hpcvib.workflow.pipeline import Pipeline, find_duplicates, lattice_fingerprint

from conftest import fe_a0, serial_only
from test_cli import clean_env, run

JOB = """
[job]
name = "small"
database = "{db}"
seed = 5
[system]
potential = "Fe_mm"
cell = 4
[generate]
vacancies = [1, 2]
interstitials = [1]
orientations = ["110", "111"]
variants = 1
[relax]
strains = [0.0, 0.02]
[thermo]
[descriptors]
"""


def write_job(folder, name="small.toml", extra="", **fmt):
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        fh.write(JOB.format(db=os.path.join(folder, "db.h5"), **fmt) + extra)
    return path


def results(db, relaxed_only=False):
    """{key: (relax energy, thermo status, ln det', S_f, D)} of a database (``relaxed_only``:
    of the configurations that have a relax record — a slice of a batched job)."""
    out = {}
    for key, st in db.read("configs").items():
        if relaxed_only and "relax" not in st:
            continue
        th, de = st.get("thermo"), st.get("descriptors")
        out[key] = (st["relax"].attrs.get("status"), st["relax"].attrs.get("energy_eV"),
                    None if th is None else (th.attrs["status"], th.attrs.get("ln_det_prime"), th.attrs.get("S_f_kB")),
                    None if de is None else de.data["D"].tolist())
    return out


@pytest.fixture(scope="module")
def serial_db(tmp_path_factory):
    """The small job run on COMM_SELF (on every rank, each in its own folder)."""
    folder = str(tmp_path_factory.mktemp(f"serial{MPI.COMM_WORLD.rank}"))
    Pipeline(MPI.COMM_SELF, load_job(write_job(folder))).run()
    return Database(os.path.join(folder, "db.h5"))


# ------------------------------------------------------------------------------ job files
@pytest.mark.parametrize("extra,message", [
    ("[relax]\nfmax = -1e-6\n", "fmax = -1e-06: must be > 0"),
    ("[thermo]\ntemprature = 300\n", "unknown key 'temprature' in [thermo]"),
    ("[fitting]\n", "unknown table [fitting]"),
    ("[generate]\nvacancies = [0]\n", "vacancies"),
])
def test_bad_job_files_name_the_problem(tmp_path, extra, message):
    path = tmp_path / f"bad{MPI.COMM_WORLD.rank}.toml"
    path.write_text('[job]\ndatabase = "x.h5"\n[system]\npotential = "Fe_mm"\n' + extra)
    with pytest.raises(InputError) as exc:
        load_job(str(path))
    assert message in str(exc.value) and str(path) in str(exc.value)


def test_missing_potential_is_an_error(tmp_path):
    path = tmp_path / f"nopot{MPI.COMM_WORLD.rank}.toml"
    path.write_text('[job]\ndatabase = "x.h5"\n[system]\ncell = 4\n[relax]\n')
    with pytest.raises(InputError, match="needs 'potential'"):
        load_job(str(path))


@serial_only()
def test_cli_bad_job_exit_code(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[job]\ndatabase = "x.h5"\n[system]\npotential = "Fe_mm"\n[relax]\nfmax = -1.0\n')
    proc = run("run", path, check=False)
    assert proc.returncode == 2 and "fmax" in proc.stderr and str(path) in proc.stderr
    assert not os.path.exists("x.h5")


# ------------------------------------------------------------------------------ database
def test_database_round_trip_and_stray_temporaries(tmp_path):
    db = Database(str(tmp_path / f"rt{MPI.COMM_WORLD.rank}.h5"))
    db.create({"hpcvib_version": "test"})
    rec = Record("configs", "A", "thermo", {"status": "ok", "S_f_kB": 1.25, "labels": {"a": [1, 2]}},
                 {"x": np.arange(6.0).reshape(2, 3)})
    db.write(rec)
    open(os.path.join(db.pending_dir, ".tmp-killed.h5"), "wb").write(b"half a file")
    for merged in (False, True):
        back = db.read_record("configs", "A", "thermo")
        assert back.attrs == rec.attrs and np.array_equal(back.data["x"], rec.data["x"])
        assert db.completed("thermo") == {"A"}
        if not merged:
            assert db.merge() == 1
    assert db.read("configs")["A"]["thermo"].attrs["labels"] == {"a": [1, 2]}


def _records(db):
    """Every record of a database as comparable values."""
    out = {}
    for section in ("configs", "references", "events"):
        for key, stages in db.read(section).items():
            for st, r in stages.items():
                out[(section, key, st)] = (json.dumps(r.attrs, sort_keys=True),
                                           {k: np.asarray(v).tolist() for k, v in r.data.items()})
    return out


def test_merge_writes_segments_without_touching_the_main_file_and_compaction_folds_them(tmp_path):
    """Records merged in three rounds (one overwriting an older record): the main file's bytes
    never change, readers see main + segments + pending with the newest record winning, and
    compaction leaves one main file with the same records and no segments."""
    db = Database(str(tmp_path / f"seg{MPI.COMM_WORLD.rank}.h5"))
    db.create({"hpcvib_version": "test"})
    main_bytes = open(db.path, "rb").read()
    db.write(Record("configs", "A", "relax", {"status": "ok", "E": 1.0}, {"x": np.arange(3.0)}))
    db.add_run({"ranks": 1})
    assert db.merge() == 2 and len(db.segments()) == 1
    db.write(Record("configs", "A", "relax", {"status": "ok", "E": 2.0}, {"x": np.arange(4.0)}))
    db.write(Record("configs", "B", "thermo", {"status": "failed", "reason": "x"}))
    assert db.merge() == 2 and len(db.segments()) == 2
    db.write(Record("events", "e1", "event", {"status": "ok"}))
    assert open(db.path, "rb").read() == main_bytes
    before = _records(db)
    assert db.read_record("configs", "A", "relax").attrs["E"] == 2.0
    assert json.loads(before[("configs", "A", "relax")][0])["E"] == 2.0
    assert db.completed("relax") == {"A"} and db.completed("event", "events") == {"e1"}
    assert len(db.provenance()["runs"]) == 1
    assert db.compact(min_segments=3) is False and len(db.segments()) == 2
    assert db.compact() is True and db.segments() == []
    assert _records(db) == before and len(db.provenance()["runs"]) == 1


def test_cached_attribute_reads_follow_merges_compactions_and_key_subsets(tmp_path):
    """Attribute scans are cached per stored file; a newer segment, a compaction (the main file
    replaced) and pending records are seen at once, and ``keys`` reads only those keys."""
    db = Database(str(tmp_path / f"cache{MPI.COMM_WORLD.rank}.h5"))
    db.create({"hpcvib_version": "test"})

    def energies():
        return {k: st["relax"].attrs["E"] for k, st in db.read("configs", "relax", with_data=False).items()}
    for key in "AB":
        db.write(Record("configs", key, "relax", {"status": "ok", "E": 1.0}, {"x": np.arange(3.0)}))
    db.merge()
    assert energies() == {"A": 1.0, "B": 1.0}
    db.read("configs", "relax", with_data=False)["A"]["relax"].attrs["E"] = 99.0  # callers get copies
    db.write(Record("configs", "A", "relax", {"status": "ok", "E": 2.0}, {"x": np.arange(4.0)}))
    assert energies() == {"A": 2.0, "B": 1.0}  # pending record
    db.merge()
    assert energies() == {"A": 2.0, "B": 1.0} and db.completed("relax") == {"A", "B"}  # newer segment
    db.compact()
    db.write(Record("configs", "C", "relax", {"status": "ok", "E": 3.0}))
    db.merge()
    assert energies() == {"A": 2.0, "B": 1.0, "C": 3.0} and db.completed("relax") == {"A", "B", "C"}
    subset = db.read("configs", "relax", keys=["A", "C"])
    assert sorted(subset) == ["A", "C"] and subset["A"]["relax"].data["x"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_merge_checks_free_space_first_and_loses_nothing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    db = Database(str(tmp_path / f"full{MPI.COMM_WORLD.rank}.h5"))
    db.create({"hpcvib_version": "test"})
    db.write(Record("configs", "A", "relax", {"status": "ok"}, {"x": np.zeros(1000)}))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 ** 9, 10 ** 9 - 100, 100))
    with pytest.raises(OSError, match="merging the pending records needs .* MB free") as exc:
        db.merge()
    assert exc.value.filename == db.path
    assert db.segments() == [] and db.completed("relax") == {"A"}
    assert not [f for f in os.listdir(db.pending_dir) if f.startswith(".tmp-")]


def test_unreadable_record_is_named_or_quarantined(tmp_path):
    db = Database(str(tmp_path / f"bad{MPI.COMM_WORLD.rank}.h5"))
    db.create({"hpcvib_version": "test"})
    db.write(Record("configs", "A", "relax", {"status": "ok"}, {"x": np.zeros(1000)}))
    db.write(Record("configs", "B", "relax", {"status": "ok"}, {"x": np.ones(3)}))
    bad = os.path.join(db.pending_dir, "configs~A~relax.h5")
    with open(bad, "r+b") as fh:
        fh.truncate(600)
    with pytest.raises(InputError, match=f"{bad}: unreadable database file .* --quarantine"):
        db.read("configs")
    assert Database(db.path, quarantine=True).check_records() == 1
    assert os.path.exists(os.path.join(db.pending_dir, "quarantine", "configs~A~relax.h5"))
    assert list(db.read("configs")) == ["B"] and db.completed("relax") == {"B"}


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    from hpcvib.database import STALE_TEMPORARY_SECONDS

    db = Database(str(tmp_path / f"tmp{MPI.COMM_WORLD.rank}.h5"))
    db.create({"hpcvib_version": "test"})
    old, fresh = os.path.join(db.pending_dir, ".tmp-old.h5"), os.path.join(db.pending_dir, ".tmp-live.h5")
    for p in (old, fresh):
        open(p, "wb").write(b"x" * 1000)
    os.utime(old, (time.time() - 2 * STALE_TEMPORARY_SECONDS,) * 2)
    assert db.remove_stale_temporaries() == 1000
    assert not os.path.exists(old) and os.path.exists(fresh)


def test_fingerprint_is_invariant_and_duplicates_found():
    from hpcvib.geometry.structures import bcc_supercell

    a0 = fe_a0()
    atoms = bcc_supercell(4, a0)
    del atoms[5]
    rng = np.random.default_rng(0)
    atoms.positions += 0.02 * rng.normal(size=atoms.positions.shape)
    moved = atoms.copy()
    moved.positions = moved.positions[:, [1, 2, 0]] * [1, -1, 1] + [a0 / 2, a0 / 2, a0 / 2] + 0.013
    fa, fb = lattice_fingerprint(atoms, a0), lattice_fingerprint(moved, a0)
    assert np.allclose(fa, fb, atol=1e-12)
    entries = [("a", 127, -1.0, fa), ("b", 127, -1.0 + 1e-7, fb), ("c", 127, -0.5, fa), ("d", 126, -1.0, fa)]
    assert find_duplicates(entries, 1e-4, 1e-3) == {"b": "a"}


# ------------------------------------------------------------------------------ the pipeline
def test_small_job_results(serial_db):
    db = serial_db
    rows = db.read("configs")
    statuses = {k: st["relax"].attrs["status"] for k, st in rows.items()}
    assert "duplicate" in statuses.values()
    # the randomised vacancy relaxes onto the ideal one: a duplicate of it
    assert rows["V1-s000-v01"]["relax"].attrs.get("duplicate_of") == "V1-s000-v00"
    a0 = fe_a0()
    for key, st in rows.items():
        rel = st["relax"]
        if rel.attrs["status"] != "ok":
            continue
        strain = rel.attrs["strain"]
        assert np.allclose(np.diag(rel.data["cell"]), 4 * a0 * (1 + strain), rtol=1e-12)
        assert rel.attrs["max_force_eV_A"] < 1e-6
        th = st["thermo"]
        if th.attrs["status"] == "ok":
            assert th.attrs["n_negative"] == 0 and np.isfinite(th.attrs["S_f_kB"])
            assert "descriptors" in st and st["descriptors"].data["dD"].shape == (35,)
        else:
            assert "not" in th.attrs["reason"] or "expected a minimum" in th.attrs["reason"]
    # strained children exist for every distinct unstrained minimum
    unique = [k for k, s in statuses.items() if s == "ok" and "@" not in k]
    assert all(f"{k}@+0.0200" in rows for k in unique)
    refs = db.read("references")
    assert set(refs) == {"+0.0000", "+0.0200"}


def test_vacancy_entropy_matches_the_thermo_route(serial_db):
    """S_f of the database's vacancy against an independent analyse_structure + Eq. 20."""
    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.physics.thermo import analyse_structure, formation_entropy
    from hpcvib.potentials import load_potential

    rec = serial_db.read_record("configs", "V1-s000-v00", "relax")
    pot = load_potential("Fe_mm")
    vac = analyse_structure(MPI.COMM_SELF, atoms_from_record(rec), pot)
    bulk = analyse_structure(MPI.COMM_SELF, bcc_supercell(4, fe_a0()), pot)
    s_f, _ = formation_entropy(vac.ln_det_prime, vac.n_atoms, bulk.ln_det_prime, bulk.n_atoms)
    th = serial_db.read_record("configs", "V1-s000-v00", "thermo")
    assert np.isclose(th.attrs["S_f_kB"], s_f, rtol=1e-10, atol=1e-10)


def test_task_farm_equals_serial(serial_db, tmp_path_factory, comm):
    """On 2 ranks the farm runs two groups that share the work dynamically; bit-identical results."""
    from hpcvib.parallel import root_only

    folder = comm.bcast(str(tmp_path_factory.mktemp("farm")) if comm.rank == 0 else None)
    job = root_only(comm, lambda: load_job(write_job(folder, name="farm.toml")))
    Pipeline(comm, job).run()
    farm = root_only(comm, lambda: results(Database(os.path.join(folder, "db.h5"))))
    assert farm == results(serial_db)


BATCHED = """
[job]
name = "batched"
database = "{db}"
seed = 3
batch_size = 3
[system]
potential = "Fe_mm"
cell = 4
[generate]
families = [{{kind = "V", sizes = [1, 2], shell_radius = 2}}, {{kind = "I", sizes = [1], orientations = ["110"]}}]
variants = 1
[relax]
strains = [0.0, 0.01]
escape_saddles = true
[thermo]
[descriptors]
"""


def test_batched_job_on_the_farm_equals_serial(tmp_path_factory, comm):
    """Batches of generated configurations, duplicates judged in batch order, on 2 ranks (the
    duplicate rule runs on the root: it must not contain a collective) = on one process."""
    from hpcvib.parallel import root_only

    def run_in(folder, pipe_comm):
        path = os.path.join(folder, "batched.toml")
        if pipe_comm.rank == 0:
            with open(path, "w") as fh:
                fh.write(BATCHED.format(db=os.path.join(folder, "db.h5")))
        pipe_comm.Barrier()
        Pipeline(pipe_comm, load_job(path)).run()
        return root_only(pipe_comm, lambda: results(Database(os.path.join(folder, "db.h5"))))

    farm = run_in(comm.bcast(str(tmp_path_factory.mktemp("batched")) if comm.rank == 0 else None), comm)
    alone = run_in(str(tmp_path_factory.mktemp(f"alone{comm.rank}")), MPI.COMM_SELF)
    assert farm == alone
    statuses = [v[0] for v in alone.values()]
    assert statuses.count("ok") >= 4 and "duplicate" in statuses


@serial_only()
def test_batch_slices_build_exactly_their_batches(tmp_path):
    """``--batches``: a run builds the generated configurations of its batches only (and their
    strained copies); two slices in two databases hold the same exact results as the whole job
    for every configuration the whole job found distinct (a slice cannot see another slice's
    minima, so only duplicate labels across slices may differ)."""
    from hpcvib.workflow.pipeline import format_batches, parse_batches

    def run_in(name, batches=None):
        folder = tmp_path / name
        folder.mkdir()
        path = folder / "batched.toml"
        path.write_text(BATCHED.format(db=folder / "db.h5"))
        pipe = Pipeline(MPI.COMM_SELF, load_job(str(path)), batches=batches)
        pipe.run()
        return pipe, results(Database(str(folder / "db.h5")), relaxed_only=True)

    whole_pipe, whole = run_in("whole")
    order = whole_pipe.batch_order()
    n_batches = -(-len(order) // 3)
    assert n_batches >= 3
    first_pipe, first = run_in("first", {1})
    _, rest = run_in("rest", parse_batches(f"2-{n_batches}"))
    assert {k.split("@")[0] for k in first} == set(order[:3])
    assert {k.split("@")[0] for k in rest} == set(order[3:])
    for key, row in whole.items():
        if row[0] == "ok":
            assert (first.get(key) or rest.get(key)) == row, key
    with pytest.raises(InputError, match=f"the job has {n_batches} batches"):
        run_in("beyond", {n_batches + 1})
    assert format_batches(parse_batches("9, 1-4,3")) == "1-4,9"
    for bad in ("0", "3-2", "a", ""):
        with pytest.raises(InputError, match="--batches"):
            parse_batches(bad)
    unbatched = run("run", write_job(str(tmp_path)), "--batches", "1", check=False)
    assert unbatched.returncode == 2 and "--batches 1: the job is not batched" in unbatched.stderr
    assert not (tmp_path / "db.h5").exists()  # refused before the database is made


def _kill_job_after_relax_records(job: str, folder, n: int) -> str:
    """Start `hpcvib run JOB`, SIGKILL it once ``n`` relax records are pending; the pending folder."""
    proc = subprocess.Popen([sys.executable, "-m", "hpcvib.cli.commands", "run", job], env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pending = str(folder / "db.h5.d")
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.isdir(pending) and sum(f.endswith("~relax.h5") for f in os.listdir(pending)) >= n:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return pending


@serial_only()
def test_killed_job_resumes_to_identical_results(serial_db, tmp_path):
    job = write_job(str(tmp_path))
    _kill_job_after_relax_records(job, tmp_path, 3)
    db = Database(str(tmp_path / "db.h5"))
    partial = db.completed("relax")
    assert 3 <= len(partial) and db.completed("thermo") == set()  # killed mid-stage
    out = run("run", job)
    assert "relax:" in out.stderr and "done)" in out.stderr
    assert results(db) == results(serial_db)


@serial_only()
def test_truncated_record_stops_the_job_by_name_and_quarantine_recomputes_it(serial_db, tmp_path):
    """A record file truncated by a failing disk: `run` stops with one line naming it (exit 2);
    `run --quarantine` moves it aside, recomputes its task and ends with the reference results."""
    job = write_job(str(tmp_path))
    pending = _kill_job_after_relax_records(job, tmp_path, 2)
    victim = sorted(f for f in os.listdir(pending) if f.endswith("~relax.h5"))[0]
    with open(os.path.join(pending, victim), "r+b") as fh:
        fh.truncate(400)
    bad = run("run", job, check=False)
    assert bad.returncode == 2 and bad.stderr.count(victim) == 1 and "--quarantine" in bad.stderr
    run("run", job, "--quarantine")
    assert os.path.exists(os.path.join(pending, "quarantine", victim))
    assert results(Database(str(tmp_path / "db.h5"))) == results(serial_db)


# ------------------------------------------------------------------------------ commands on the database
@serial_only()
def test_status_export_fit_predict_report(serial_db, tmp_path):
    db = serial_db.path
    st = json.loads(run("status", db, "--json").stdout)
    assert st["counts"]["relax"]["duplicate"] >= 1 and st["configs_per_core_hour"] > 0
    assert run("export", db, "-o", tmp_path / "t.csv").returncode == 0
    header = open(tmp_path / "t.csv").readline()
    assert "S_f_kB" in header and "key" in header
    run("export", db, "-o", tmp_path / "t.extxyz")
    import ase.io

    frames = ase.io.read(tmp_path / "t.extxyz", ":")
    assert len(frames) == st["counts"]["relax"]["ok"]
    models = tmp_path / "models"
    fit = json.loads(run("fit", db, "--target", "S_f", "--model", "linear", "--splits", "4",
                         "-o", models, "--json").stdout)
    assert fit["S_f/linear"]["n_samples"] == st["counts"]["thermo"]["ok"]
    # predict on a relaxed configuration from the database; the prediction is O(N) and must equal
    # the model's prediction from the database's own ΔD (independent reference cell route)
    from hpcvib.learning.models import SavedModel

    rec = serial_db.read_record("configs", "V2-s000-v00", "relax")
    ase.io.write(tmp_path / "v2.extxyz", atoms_from_record(rec))
    out = json.loads(run("predict", models / "S_f_linear.json", tmp_path / "v2.extxyz", "--json",
                         "-o", tmp_path / "contrib.extxyz").stdout)
    saved = SavedModel.load(str(models / "S_f_linear.json"))
    dD = serial_db.read_record("configs", "V2-s000-v00", "descriptors").data["dD"]
    # extxyz stores positions to 1e-8 Å, hence 1e-7 relative rather than round-off
    assert np.isclose(out["prediction"], saved.model.predict(dD[None])[0], rtol=1e-7)
    contrib = ase.io.read(tmp_path / "contrib.extxyz")
    # extxyz writes each per-atom value with 8 decimals: the sum is exact to N × 5e-9
    assert abs(contrib.arrays["S_f_atom"].sum() - out["prediction"]) <= len(contrib) * 5e-9
    bad = run("predict", models / "S_f_linear.json", tmp_path / "v2.extxyz", "--rcut", "4.0", check=False)
    assert bad.returncode == 2 and "rcut" in bad.stderr
    run("report", db, "--models", models, "-o", tmp_path / "report")
    text = open(tmp_path / "report" / "report.md").read()
    assert "S_f (k_B) — linear model" in text and "0.82" in text
    assert os.path.getsize(tmp_path / "report" / "parity_S_f_linear.png") > 10000


@serial_only()
def test_per_strain_fit_from_the_table_and_prediction_at_a_strain(serial_db, tmp_path):
    """`export -o T.npz` then `fit T.npz --per-strain`: one linear model per strain class of the
    database (0 and 2 %); `predict` on a strained configuration states its strain (from the cell,
    against the database's a0) and equals that class's model applied to the database's own ΔD."""
    import ase.io

    from hpcvib.learning.models import SavedModel

    db = serial_db.path
    run("export", db, "-o", tmp_path / "t.npz")
    models = tmp_path / "models"
    fit = json.loads(run("fit", tmp_path / "t.npz", "--per-strain", "--splits", "3", "-o", models,
                         "--json").stdout)
    assert fit["S_f/linear"]["n_samples"] == json.loads(run("status", db, "--json").stdout)["counts"]["thermo"]["ok"]
    saved = SavedModel.load(str(models / "S_f_linear.json"))
    assert np.allclose(saved.model.strains_, [0.0, 0.02])
    assert np.isclose(saved.model.volume_per_atom0, serial_db.provenance()["a0"] ** 3 / 2, rtol=1e-14)
    key = next(k for k in serial_db.read("configs") if k.startswith("V2-s000-v00@"))
    rec = serial_db.read_record("configs", key, "relax")
    ase.io.write(tmp_path / "v2.extxyz", atoms_from_record(rec))
    out = json.loads(run("predict", models / "S_f_linear.json", tmp_path / "v2.extxyz", "--json").stdout)
    assert abs(out["strain"] - 0.02) < 1e-7  # extxyz keeps the cell to 1e-8 Å
    dD = serial_db.read_record("configs", key, "descriptors").data["dD"]
    assert np.isclose(out["prediction"], saved.model.models_[1].predict(dD[None])[0], rtol=1e-7)
    bad = run("fit", tmp_path / "t.npz", "--splits", "0", check=False)
    assert bad.returncode == 2 and "--splits 0" in bad.stderr


@serial_only()
def test_fit_on_several_training_tables_equals_the_fit_on_their_rows_together(serial_db, tmp_path):
    """A table split in two by rows and fitted as two tables gives the weights of the whole table
    (the rows are merged in order); tables of different descriptor settings are refused."""
    from hpcvib.learning.models import SavedModel

    run("export", serial_db.path, "-o", tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz") as z:
        whole = {k: z[k] for k in z.files}
    half = len(whole["keys"]) // 2
    for name, rows in (("a", slice(0, half)), ("b", slice(half, None))):
        np.savez(tmp_path / f"{name}.npz", **{k: (v if k == "meta" else v[rows]) for k, v in whole.items()})
    for args, out in (([tmp_path / "t.npz"], "m1"), ([tmp_path / "a.npz", tmp_path / "b.npz"], "m2")):
        run("fit", *args, "--splits", "2", "-o", tmp_path / out)
    w1 = SavedModel.load(str(tmp_path / "m1" / "S_f_linear.json")).model.coef_
    w2 = SavedModel.load(str(tmp_path / "m2" / "S_f_linear.json")).model.coef_
    assert np.allclose(w1, w2, rtol=1e-12, atol=1e-14)
    # the report of the two tables: its statistics are the database's (read from its records)
    from hpcvib.learning.report import database_statistics_lines

    run("report", tmp_path / "a.npz", tmp_path / "b.npz", "--models", tmp_path / "m2", "-o", tmp_path / "rep")
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "2 training table(s)" in text and "S_f (k_B) — linear model" in text
    stats = database_statistics_lines(serial_db)
    assert len(stats) > 4 and "\n".join(stats) in text
    bad_mix = run("report", serial_db.path, tmp_path / "a.npz", check=False)
    assert bad_mix.returncode == 2 and "one or more training tables" in bad_mix.stderr
    meta = json.loads(str(whole["meta"]))
    meta["settings"]["jmax"] = 3.0
    np.savez(tmp_path / "c.npz", **{**{k: v[half:] for k, v in whole.items() if k != "meta"},
                                    "meta": np.array(json.dumps(meta))})
    bad = run("fit", tmp_path / "a.npz", tmp_path / "c.npz", "--splits", "2", "-o", tmp_path / "m3", check=False)
    assert bad.returncode == 2 and "c.npz: descriptor settings differ" in bad.stderr
    mixed = run("fit", serial_db.path, tmp_path / "a.npz", check=False)
    assert mixed.returncode == 2 and "one or more training tables" in mixed.stderr


def _table(path, minima):
    """A training table of ``minima`` = [(key, family, [(strain, E_f, S_f), ...]), ...]."""
    from hpcvib.learning.training import TABLE_FORMAT

    rows = [(f"{key}@{100 * e:+g}%", fam, e, ef, sf) for key, fam, strains in minima for e, ef, sf in strains]
    meta = {"format": TABLE_FORMAT, "settings": {"jmax": 4.0}, "potential": "Fe_mm", "potential_sha256": "x",
            "volume_per_atom0": 11.64}
    np.savez(path, keys=np.array([r[0] for r in rows]), family=np.array([r[1] for r in rows]),
             strain=np.array([r[2] for r in rows]), E_f_eV=np.array([r[3] for r in rows]),
             S_f_kB=np.array([r[4] for r in rows]), dD=np.zeros((len(rows), 3)), meta=np.array(json.dumps(meta)))
    return str(path)


def test_merged_tables_hold_each_minimum_once(tmp_path):
    """Tables of two slices (or databases) may hold one minimum under two keys: a minimum of the
    second whose unstrained configuration matches one of the first in family, E_f and S_f (within
    round-off of the relaxation) is left out with all its strained rows; minima that differ in
    any of them, or have no unstrained row, stay."""
    from hpcvib.learning.training import read_training_tables

    strains = (-0.01, 0.0, 0.01)
    m1 = [(e, 4.0 + e, 5.0 - e) for e in strains]
    m2 = [(e, 6.0 + e, 2.0 + e) for e in strains]
    first = _table(tmp_path / "a.npz", [("I2-a", "I2", m1), ("I2-b", "I2", m2)])
    second = _table(tmp_path / "b.npz", [
        ("I2-c", "I2", [(e, ef + 2e-7, sf - 1e-6) for e, ef, sf in m1]),      # I2-a again: left out
        ("I2-d", "I2", [(e, ef, sf + (0.01 if e == 0 else 0.0)) for e, ef, sf in m2]),  # S_f differs
        ("I3-e", "I3", m2),                                                  # another family
        ("I2-f", "I2", [(e, ef + (0.5 if e else 0.0), sf) for e, ef, sf in m2]),  # I2-b; a copy moved on
        ("I2-g", "I2", [r for r in m1 if r[0] != 0.0]),                      # no unstrained row
        ("I2-b", "I2", [(e, ef + 1e-4, sf) for e, ef, sf in m2]),            # same key, E_f differs
    ])
    data, _ = read_training_tables([first, second])
    parents = [k.split("@")[0] for k in data["keys"]]
    # a key that two tables share gets the file name before the second table's keys
    assert sorted(set(parents)) == ["I2-a", "I2-b", "b.npz:I2-b", "b.npz:I2-d", "b.npz:I2-g", "b.npz:I3-e"]
    assert len(data["keys"]) == len(data["y"]) == len(data["dD"]) == 5 * 3 + 2


@serial_only()
def test_import_stage_turns_structure_files_into_a_database(serial_db, tmp_path):
    """The relaxed structures of a database exported to extxyz, a rattled copy of one and an
    unreadable file, imported by an [import] job with [thermo] and [descriptors]: every imported
    minimum has the S_f and E_f of the original database (the same structures through another
    route: bcc host and strain detected from the cell, its own perfect reference); the rattled
    one is recorded as not relaxed, the unreadable one as failed; `fit` runs on the result."""
    import ase.io

    run("export", serial_db.path, "-o", tmp_path / "relaxed.extxyz")
    frames = ase.io.read(tmp_path / "relaxed.extxyz", ":")
    rattled = frames[0].copy()
    rattled.positions[3] += [0.05, 0.0, 0.0]
    ase.io.write(tmp_path / "rattled.extxyz", rattled)
    (tmp_path / "bad.extxyz").write_text("not a structure\n")
    job = tmp_path / "import.toml"
    job.write_text(f'[job]\ndatabase = "{tmp_path / "imp.h5"}"\n[system]\npotential = "Fe_mm"\ncell = 6\n'
                   f'[import]\nfiles = ["{tmp_path}/relaxed.extxyz", "{tmp_path}/rattled.extxyz", '
                   f'"{tmp_path}/bad.extxyz"]\n[thermo]\n[descriptors]\n')
    run("run", job)
    db = Database(str(tmp_path / "imp.h5"))
    configs = db.read("configs", with_data=False)
    original = serial_db.read("configs", with_data=False)
    prefix = str(tmp_path / "relaxed.extxyz").lstrip("/").replace("/", "_")
    compared = 0
    for k, frame in enumerate(frames):
        mine = configs[f"{prefix}@{k}"]
        theirs = original[frame.info["key"]]
        if theirs.get("thermo") is None or not theirs["thermo"].ok:
            continue
        assert mine["generate"].attrs["kind"] == theirs["generate"].attrs["kind"]
        assert abs(mine["generate"].attrs["strain"] - theirs["thermo"].attrs["strain"]) < 1e-8
        # extxyz keeps positions to 1e-8 Å: S_f and E_f agree to that precision, not to round-off
        assert abs(mine["thermo"].attrs["S_f_kB"] - theirs["thermo"].attrs["S_f_kB"]) < 1e-4
        assert abs(mine["thermo"].attrs["E_f_eV"] - theirs["thermo"].attrs["E_f_eV"]) < 1e-6
        assert mine["descriptors"].ok
        compared += 1
    assert compared >= 4
    rat = configs[str(tmp_path / "rattled.extxyz").lstrip("/").replace("/", "_")]["relax"]
    assert rat.attrs["status"] == "failed" and "not relaxed" in rat.attrs["reason"]
    bad = configs[str(tmp_path / "bad.extxyz").lstrip("/").replace("/", "_")]["generate"]
    assert bad.attrs["status"] == "failed" and "cannot read" in bad.attrs["reason"]
    assert run("run", job).returncode == 0  # a rerun imports nothing new
    fit = json.loads(run("fit", db.path, "--target", "S_f", "--model", "linear", "--splits", "2", "-o",
                         tmp_path / "m", "--json").stdout)
    assert fit["S_f/linear"]["n_samples"] == compared


@serial_only()
def test_import_command_lammps_data_with_types_equals_extxyz(tmp_path):
    """`hpcvib import --relax` of one vacancy cell as extxyz and as a LAMMPS data file without
    Masses (--types Fe): the same relaxed S_f and E_f, labelled by the extxyz family."""
    import csv

    import ase.io

    from hpcvib.geometry.structures import bcc_supercell

    atoms = bcc_supercell(4, fe_a0())
    del atoms[0]
    atoms.info["family"] = "V1"
    ase.io.write(tmp_path / "v1.extxyz", atoms)
    ase.io.write(tmp_path / "v1.data", atoms, format="lammps-data", masses=False)
    run("import", tmp_path / "a.h5", tmp_path / "v1.extxyz", "-p", "Fe_mm", "--relax")
    run("import", tmp_path / "b.h5", tmp_path / "v1.data", "--types", "Fe", "--format", "lammps-data",
        "-p", "Fe_mm", "--relax")
    rows = []
    for name in ("a", "b"):
        run("export", tmp_path / f"{name}.h5", "-o", tmp_path / f"{name}.csv")
        rows.append(next(csv.DictReader(open(tmp_path / f"{name}.csv"))))
    assert rows[0]["kind"] == "V1" and rows[1]["kind"] == "imported"
    assert abs(float(rows[0]["S_f_kB"]) - float(rows[1]["S_f_kB"])) < 1e-8
    assert abs(float(rows[0]["E_f_eV"]) - float(rows[1]["E_f_eV"])) < 1e-9


@serial_only()
def test_import_fcc_host_detected_and_checked(tmp_path):
    """An fcc vacancy cell (Fe_mm's metastable fcc lattice, strained 1 %) imported with
    `--lattice fcc --relax`: host and strain detected from the cell, S_f equal to `hpcvib thermo`
    against the perfect cell given as a file (factorised, not Bloch); the same cell imported
    into a bcc job is refused with the reason, not given a wrong reference."""
    import csv

    import ase.io

    from hpcvib.geometry.structures import apply_isotropic_strain, cubic_supercell
    from hpcvib.potentials import lattice_constant, load_potential

    a_fcc = lattice_constant(load_potential("Fe_mm"), "fcc")
    perfect = apply_isotropic_strain(cubic_supercell("fcc", 3, a_fcc), 0.01)
    atoms = perfect.copy()
    del atoms[7]
    ase.io.write(tmp_path / "v1.extxyz", atoms)
    ase.io.write(tmp_path / "perfect.extxyz", perfect)
    run("import", tmp_path / "f.h5", tmp_path / "v1.extxyz", "-p", "Fe_mm", "--relax", "--lattice", "fcc",
        "--no-descriptors")
    run("export", tmp_path / "f.h5", "-o", tmp_path / "f.csv")
    run("export", tmp_path / "f.h5", "-o", tmp_path / "relaxed.extxyz")
    row = next(csv.DictReader(open(tmp_path / "f.csv")))
    assert abs(float(row["strain"]) - 0.01) < 1e-9
    given = json.loads(run("thermo", tmp_path / "relaxed.extxyz", "-p", "Fe_mm", "--reference",
                           tmp_path / "perfect.extxyz", "--json").stdout)
    assert given["reference"]["method"] != "bloch"
    assert abs(float(row["S_f_kB"]) - given["S_f_kB"]) < 1e-5  # extxyz keeps positions to 1e-8 Å
    run("import", tmp_path / "b.h5", tmp_path / "v1.extxyz", "-p", "Fe_mm", "--no-descriptors")
    gen = Database(str(tmp_path / "b.h5")).read("configs", "generate", with_data=False)
    (rec,) = [st["generate"] for st in gen.values()]
    assert rec.attrs["status"] == "failed" and "host is fcc" in rec.attrs["reason"]


@serial_only()
def test_import_events_from_saddle_output(tmp_path):
    """`hpcvib saddle -o EV.extxyz` (minimum, saddle, final minimum) imported with `import --events`:
    the event record's ΔE and ln ν* equal the saddle search's own (the same structures, written to
    extxyz at 1e-8 Å, analysed again by two exact factorisations), with D_m ⊕ D_s for the event
    models; a 1-frame file and a minimum given as the saddle are recorded as failed."""
    import ase.io

    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.landscape.exact_minimum import fire
    from hpcvib.potentials import load_potential

    atoms = bcc_supercell(4, fe_a0())
    del atoms[0]
    fire(atoms, load_potential("Fe_mm"), 1e-6, 20000)
    ase.io.write(tmp_path / "min.extxyz", atoms)
    search = json.loads(run("saddle", tmp_path / "min.extxyz", "-p", "Fe_mm", "--seed", "3", "-o",
                            tmp_path / "ev.extxyz", "--json").stdout)
    assert search["status"] == "ok"
    ase.io.write(tmp_path / "one.extxyz", atoms)
    ase.io.write(tmp_path / "two_minima.extxyz", [atoms, atoms])
    run("import", tmp_path / "ev.h5", "--events", tmp_path / "ev.extxyz", tmp_path / "one.extxyz",
        tmp_path / "two_minima.extxyz", "-p", "Fe_mm")
    events = {k: st["event"] for k, st in Database(str(tmp_path / "ev.h5")).read("events").items()}
    ev = next(v for k, v in events.items() if k.endswith("_ev.extxyz"))
    assert ev.ok and abs(ev.attrs["delta_E_eV"] - search["delta_E_eV"]) < 1e-7
    assert abs(ev.attrs["ln_nu_THz"] - search["ln_nu_THz"]) < 1e-5
    assert ev.data["D_min"].shape == ev.data["D_saddle"].shape == (35,)
    failed = [v.attrs["reason"] for k, v in events.items() if not v.ok]
    assert len(failed) == 2
    assert any("2 or 3 frames" in r for r in failed) and any("saddle" in r for r in failed)
    # an eOn-style event directory (reactant / saddle / product files) gives the same event
    eon = tmp_path / "eon_event"
    eon.mkdir()
    for name, frame in zip(("reactant", "saddle", "product"), ase.io.read(tmp_path / "ev.extxyz", ":")):
        ase.io.write(eon / f"{name}.extxyz", frame)
    run("import", tmp_path / "eon.h5", "--events", eon, "-p", "Fe_mm")
    from_dir, = [st["event"] for st in Database(str(tmp_path / "eon.h5")).read("events").values()]
    assert from_dir.attrs["delta_E_eV"] == ev.attrs["delta_E_eV"] and "final_positions" in from_dir.data
    # ARTn directories of numbered min / sad files: paired by number, or by events.list where
    # the numbering alone would pair the saddle with the wrong minimum
    m, s, f = ase.io.read(tmp_path / "ev.extxyz", ":")
    numbered, listed = tmp_path / "artn_numbered", tmp_path / "artn_listed"
    numbered.mkdir()
    listed.mkdir()
    for name, frame in (("min1000", m), ("sad1001", s), ("min1001", f), ("sad1002", s), ("min1002", m)):
        ase.io.write(numbered / f"{name}.xyz", frame, format="extxyz")
    for name, frame in (("min0002", m), ("min0004", f), ("sad0005", s)):
        ase.io.write(listed / f"{name}.xyz", frame, format="extxyz")
    (listed / "events.list").write_text("  sad0005   min0002   min0004   Accepted\n")
    run("import", tmp_path / "artn.h5", "--events", numbered, listed, "-p", "Fe_mm")
    artn = {k.rsplit("_", 1)[-1]: st["event"] for k, st in Database(str(tmp_path / "artn.h5")).read("events").items()}
    assert sorted(artn) == ["sad0005", "sad1001", "sad1002"]
    assert all(e.ok and "final_positions" in e.data for e in artn.values())
    assert abs(artn["sad1001"].attrs["delta_E_eV"] - ev.attrs["delta_E_eV"]) < 1e-7
    assert abs(artn["sad0005"].attrs["delta_E_eV"] - ev.attrs["delta_E_eV"]) < 1e-7
    assert artn["sad0005"].attrs["artn_status"] == "Accepted"
    reverse = artn["sad1002"].attrs
    assert abs(reverse["delta_E_eV"] - (search["energies"]["saddle"] - search["energies"]["final"])) < 1e-6
    # round trip: the database's events as triplet files, imported again, give the same numbers
    run("export", tmp_path / "ev.h5", "--events", "-o", tmp_path / "out")
    assert len(os.listdir(tmp_path / "out")) == 1
    run("import", tmp_path / "back.h5", "--events", str(tmp_path / "out" / "*.extxyz"), "-p", "Fe_mm")
    back, = [st["event"] for st in Database(str(tmp_path / "back.h5")).read("events").values()]
    for name in ("delta_E_eV", "ln_nu_THz", "lambda_neg"):
        assert back.attrs[name] == ev.attrs[name], name
    assert np.array_equal(back.data["D_saddle"], ev.data["D_saddle"])


def test_a_new_job_stage_is_one_registration(serial_db, tmp_path, monkeypatch):
    """A toy stage registered without touching any other file: its table is validated and
    defaulted like every table, it runs after [thermo] on the job's ranks, and its records show up
    in the database's flat table."""
    from hpcvib.database import flat_table
    from hpcvib.parallel import root_only
    from hpcvib.workflow import jobfile, pipeline
    from hpcvib.workflow.jobfile import Key

    monkeypatch.setattr(jobfile, "SCHEMA", dict(jobfile.SCHEMA))
    monkeypatch.setattr(jobfile, "STAGE_TABLES", jobfile.STAGE_TABLES)
    monkeypatch.setattr(pipeline, "STAGE_RUNNERS", dict(pipeline.STAGE_RUNNERS))

    def toy(pipe):
        """S_f per atom of every configuration with exact thermo, times [toy] scale."""
        keys = pipe._keys_with("thermo", lambda rec: rec.ok and "S_f_kB" in rec.attrs)

        def task(group, key):
            th = root_only(group, pipe.db.read_record, "configs", key, "thermo")
            rel = root_only(group, pipe.db.read_record, "configs", key, "relax")
            value = pipe.job["toy"]["scale"] * th.attrs["S_f_kB"] / len(rel.data["positions"])
            pipe._write(group, Record("configs", key, "toy", {"status": "ok", "scaled_S_f_per_atom": value}))
        pipe._farm(keys, task, "toy")

    pipeline.register_stage("toy", {"scale": Key((float, int), 1.0, None, "a factor")}, toy, after="thermo")
    assert jobfile.STAGE_TABLES.index("toy") == jobfile.STAGE_TABLES.index("thermo") + 1
    bad = tmp_path / f"bad{MPI.COMM_WORLD.rank}.toml"
    bad.write_text('[job]\ndatabase = "x.h5"\n[system]\npotential = "Fe_mm"\n[toy]\nscael = 2\n')
    with pytest.raises(InputError, match="unknown key 'scael' in \\[toy\\]"):
        load_job(str(bad))
    folder = str(tmp_path / f"toy{MPI.COMM_WORLD.rank}")
    os.makedirs(folder)
    job = load_job(write_job(folder, extra="[toy]\nscale = 2.0\n"))
    assert job.stages.index("toy") == job.stages.index("thermo") + 1
    Pipeline(MPI.COMM_SELF, job).run()
    db = Database(os.path.join(folder, "db.h5"))
    rows = {r["key"]: r for r in flat_table(db)}
    reference = serial_db.read("configs", "thermo", with_data=False)
    checked = 0
    for key, st in reference.items():
        if st["thermo"].ok and "S_f_kB" in st["thermo"].attrs:
            n = st["thermo"].attrs.get("n_atoms") or len(serial_db.read_record("configs", key, "relax").data["positions"])
            assert rows[key]["toy_status"] == "ok"
            assert rows[key]["scaled_S_f_per_atom"] == pytest.approx(2.0 * st["thermo"].attrs["S_f_kB"] / n, rel=1e-12)
            checked += 1
    assert checked >= 4


@serial_only()
@pytest.mark.parametrize("route, tol", [("dense", 1e-8), ("quadrature", 1e-4)])
def test_local_formation_entropies_in_the_database(tmp_path, route, tol):
    """[thermo] local = true: every configuration's per-atom ΔS_i, stored and exported as an
    extxyz array, sums to its exact S_f (Eq. 20, from the factorisation: an independent route);
    the quadrature route to its bound (1e-6 k_B per atom)."""
    import ase.io

    text = JOB.format(db=str(tmp_path / "loc.h5")).replace("[thermo]", f"[thermo]\nlocal = true\nlocal_route = \"{route}\"")
    text = text.replace("interstitials = [1]", "interstitials = []").replace("variants = 1", "variants = 0")
    path = tmp_path / "loc.toml"
    path.write_text(text)
    run("run", path)
    db = Database(str(tmp_path / "loc.h5"))
    checked = 0
    for key, st in db.read("configs").items():
        th = st.get("thermo")
        if th is not None and th.ok:
            assert th.data["dS_local"].shape == (len(st["relax"].data["positions"]),)
            assert abs(th.data["dS_local"].sum() - th.attrs["S_f_kB"]) < tol
            checked += 1
    assert checked >= 2
    run("export", db.path, "-o", tmp_path / "loc.extxyz")
    frames = ase.io.read(tmp_path / "loc.extxyz", ":")
    assert all(abs(f.arrays["dS_local_kB"].sum() - f.info["S_f_kB"]) < 1e-5 for f in frames if "S_f_kB" in f.info)
    from hpcvib.learning.report import local_entropy_lines

    (tmp_path / "report").mkdir()
    lines = local_entropy_lines(db, str(tmp_path / "report"))            # the report's slice pictures
    pictures = [line[line.index("(") + 1:-1] for line in lines if line.startswith("![")]
    assert pictures and all((tmp_path / "report" / p).stat().st_size > 1000 for p in pictures)


def test_small_perfect_reference_gives_the_same_excess(comm):
    """ΔD, ΔDD against a 2×2×2 perfect cell equal those against the full-size perfect cell."""
    from hpcvib.geometry.structures import bcc_supercell
    from hpcvib.learning.descriptors import DescriptorSettings, descriptor_sums
    from hpcvib.learning.prediction import primitive_reference

    settings = DescriptorSettings(jmax=2, rcut=5.0)
    big = bcc_supercell(5, fe_a0(), strain=0.01)
    small = primitive_reference(big)
    assert len(small) == 16
    atoms = big.copy()
    del atoms[[3, 40]]
    d = descriptor_sums(comm, atoms, settings)
    b = descriptor_sums(comm, big, settings)
    s = descriptor_sums(comm, small, settings)
    r_big, r_small = len(atoms) / len(big), len(atoms) / len(small)
    assert np.allclose(d.D - r_small * s.D, d.D - r_big * b.D, rtol=1e-9, atol=1e-9 * np.abs(d.D).max())
    assert np.allclose(d.DD - r_small * s.DD, d.DD - r_big * b.DD, rtol=1e-9, atol=1e-9 * np.abs(d.DD).max())


@serial_only()
def test_saddle_stage_events_and_event_models(tmp_path):
    """[saddles] on the vacancy of a small cell: event records with ΔE, exact ln ν*, D_min/D_saddle
    for every connected saddle, failures with reasons, duplicates marked; a rerun changes nothing;
    the event models fit on them (70 features)."""
    extra = "[saddles]\nsearches = 6\n"
    text = JOB.format(db=str(tmp_path / "ev.h5")).replace("interstitials = [1]", "interstitials = []")
    text = text.replace("vacancies = [1, 2]", "vacancies = [1]").replace("variants = 1", "variants = 0")
    text = text.replace("strains = [0.0, 0.02]", "strains = [0.0]")
    path = tmp_path / "ev.toml"
    path.write_text(text + extra)
    run("run", path)
    db = Database(str(tmp_path / "ev.h5"))
    events = db.read("events")
    assert len(events) == 6
    statuses = {k: st["event"].attrs["status"] for k, st in events.items()}
    ok = [k for k, v in statuses.items() if v == "ok"]
    assert ok, statuses
    for k, st in events.items():
        ev = st["event"]
        if ev.attrs["status"] == "ok":
            assert ev.attrs["n_negative"] == 1 and ev.attrs["delta_E_eV"] > 0
            assert np.isfinite(ev.attrs["ln_nu_THz"]) and ev.data["D_min"].shape == (35,)
        elif ev.attrs["status"] == "failed":
            assert ev.attrs["reason"]
        else:
            assert ev.attrs["duplicate_of"] in ok
    run("run", path)  # resumes: nothing left to search
    after = Database(str(tmp_path / "ev.h5")).read("events")
    def dump(evs):  # failed searches carry NaN results: compare their text
        return json.dumps({k: st["event"].attrs for k, st in sorted(evs.items())}, sort_keys=True)
    assert dump(after) == dump(events)
    # the searched events as triplet files: imported again, the same ΔE and ln ν* (to the 1e-8 Å
    # of extxyz positions)
    run("export", tmp_path / "ev.h5", "--events", "-o", tmp_path / "triplets")
    assert len(os.listdir(tmp_path / "triplets")) == len(ok)
    run("import", tmp_path / "again.h5", "--events", str(tmp_path / "triplets" / "*.extxyz"), "-p", "Fe_mm")
    again = {k.split("_")[-1].replace(".extxyz", ""): st["event"] for k, st in
             Database(str(tmp_path / "again.h5")).read("events").items()}
    for k in ok:
        assert abs(again[k].attrs["delta_E_eV"] - events[k]["event"].attrs["delta_E_eV"]) < 1e-6
        assert abs(again[k].attrs["ln_nu_THz"] - events[k]["event"].attrs["ln_nu_THz"]) < 1e-4
    if len(ok) >= 2:
        out = json.loads(run("fit", tmp_path / "ev.h5", "--target", "dE", "--model", "linear", "--splits", "2",
                             "-o", tmp_path / "m", "--json").stdout)
        assert out["dE/linear"]["n_samples"] == len(ok) and out["dE/linear"]["n_features"] == 70


@serial_only()
def test_changed_potential_file_is_refused_on_resume(tmp_path):
    """A database remembers the potential's sha256: editing the file at the same path and
    resuming is an error naming both hashes (was: two potentials mixed in one database)."""
    import shutil

    from hpcvib.potentials import data_file

    pot = tmp_path / "Fe.eam.fs"
    shutil.copy(data_file("Fe_mm.eam.fs"), pot)
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\ndatabase = "{tmp_path / "db.h5"}"\n[system]\npotential = "{pot}"\ncell = 3\n'
                   '[generate]\nvacancies = [1]\ninterstitials = []\ncrowdions = false\n')
    Pipeline(MPI.COMM_SELF, load_job(str(job))).run()
    Pipeline(MPI.COMM_SELF, load_job(str(job))).run()  # unchanged: resumes
    lines = pot.read_text().splitlines()
    lines[5] = lines[5].replace("0", "1", 1)  # one digit of the tables
    pot.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="sha256"):
        Pipeline(MPI.COMM_SELF, load_job(str(job))).run()


@serial_only()
def test_default_element_resumes_a_database_built_with_it_written_out(tmp_path):
    """[system] symbol = '' means the potential's first species: a database built with
    symbol = "Fe" resumes with the default (was refused: the raw values '' and 'Fe' differ); an
    element the potential lacks is still refused."""
    body = '[system]\npotential = "Fe_mm"\ncell = 3\n{symbol}[generate]\nvacancies = [1]\ninterstitials = []\ncrowdions = false\n'
    job = tmp_path / "job.toml"
    head = f'[job]\ndatabase = "{tmp_path / "db.h5"}"\n'
    job.write_text(head + body.format(symbol='symbol = "Fe"\n'))
    Pipeline(MPI.COMM_SELF, load_job(str(job))).run()
    job.write_text(head + body.format(symbol=""))
    Pipeline(MPI.COMM_SELF, load_job(str(job))).run()
    job.write_text(head + body.format(symbol='symbol = "Cr"\n'))
    with pytest.raises(InputError, match="Cr"):
        Pipeline(MPI.COMM_SELF, load_job(str(job))).run()


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "jobs"))
                                        if f.endswith(".toml")))
def test_every_shipped_job_file_is_valid(name):
    """Every job in jobs/ passes the schema (families, keys, values) and names its stages."""
    job = load_job(os.path.join(os.path.dirname(__file__), "..", "jobs", name))
    assert job.stages and job["job"]["database"]
