"""Fault injection: a full disk (file-size limit), unwritable and missing paths, a potential
readable by one rank only — one-line errors, non-zero exit, nothing half-written, no hang."""

import os
import shutil
import subprocess
import sys

import ase.io
import pytest

from hpcvib.geometry.structures import bcc_supercell

from conftest import fe_a0, serial_only
from test_cli import HPCVIB, clean_env as _env

pytestmark = serial_only()


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "fe.extxyz"
    ase.io.write(path, bcc_supercell(3, fe_a0()))
    return path


@pytest.mark.parametrize("suffix", [".mtx", ".npz", ".petsc"])
def test_full_disk_is_an_error_and_leaves_nothing(cell, tmp_path, suffix):
    """Writes beyond RLIMIT_FSIZE fail like a full disk or an exceeded quota (EFBIG)."""
    out = tmp_path / f"H{suffix}"
    # the limit is set after MPI_Init (PMIx needs large shared-memory files to start)
    script = ("import sys, resource; from mpi4py import MPI; "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
              "from hpcvib.cli.commands import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", script, "-q", "hessian", str(cell), "-p", "Fe_mm", "-o", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"hpcvib: error: {out}:" in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args", [["descriptors", "{cell}", "-p", "Fe_mm", "-o", "/proc/x.npz"],
                                  ["hessian", "{cell}", "-p", "Fe_mm", "-o", "/proc/H.mtx"],
                                  ["thermo", "{cell}", "-p", "Fe_mm", "-t", "300", "--local", "-o", "/proc/x.extxyz"],
                                  ["fit", "/nonexistent/db.h5"], ["status", "/nonexistent/db.h5"],
                                  ["report", "/nonexistent/db.h5"],
                                  ["fit", "{truncated}"], ["status", "{truncated}"], ["report", "{truncated}"],
                                  ["import", "/proc/db.h5", "{cell}", "-p", "Fe_mm"],
                                  ["thermo", "{cell}", "-p", "Fe_mm", "--spectrum", "--dos-plot", "/proc/x.png"],
                                  ["predict", "Fe_mm-Sf-linear", "{cell}", "-o", "/proc/x.extxyz"]])
def test_environment_errors_are_one_line(cell, args, tmp_path):
    """Unwritable outputs, missing and truncated databases (a database cut at half its size, as
    by a crash of the disk under it), a database in an unwritable folder."""
    from hpcvib.database import Database

    db = Database(str(tmp_path / "full.h5"))
    db.create({"hpcvib_version": "test"})
    truncated = tmp_path / "truncated.h5"
    data = open(db.path, "rb").read()
    truncated.write_bytes(data[:len(data) // 2])
    proc = subprocess.run(HPCVIB + [a.format(cell=cell, truncated=truncated) for a in args], capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("hpcvib: error:") == 1
    if "db.h5" in " ".join(args) or "{truncated}" in args:  # the database is named, not a later file
        assert ("db.h5" in proc.stderr) or ("truncated.h5" in proc.stderr)


def test_potential_readable_by_one_rank_only_does_not_hang(tmp_path):
    """Rank 1 cannot read the potential (a per-rank path that does not exist there): the error
    is printed once and every rank ends (was a silent hang)."""
    from hpcvib.potentials import data_file

    ok = tmp_path / "rank0" / "Fe.eam.fs"
    ok.parent.mkdir()
    shutil.copy(data_file("Fe_mm.eam.fs"), ok)
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\ndatabase = "{tmp_path / "db.h5"}"\n[system]\n'
                   f'potential = "{tmp_path}/rank${{OMPI_COMM_WORLD_RANK}}/Fe.eam.fs"\ncell = 3\n'
                   '[generate]\nvacancies = [1]\ninterstitials = []\ncrowdions = false\n[relax]\n')
    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    proc = subprocess.run([shutil.which("mpiexec"), *flags, "-n", "2"] + HPCVIB + ["run", str(job)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count("potential file not found") == 1


@pytest.fixture(scope="module")
def good_and_bad(tmp_path_factory):
    """Two good files, an unreadable one, and a three-frame file whose middle frame has two
    atoms 0.3 Å apart."""
    folder = tmp_path_factory.mktemp("batch")
    good = bcc_supercell(3, fe_a0())
    ase.io.write(folder / "a.extxyz", good)
    ase.io.write(folder / "c.extxyz", good)
    (folder / "b.extxyz").write_text("this is not a structure\n")
    squeezed = good.copy()
    squeezed.positions[1] = squeezed.positions[0] + [0.3, 0.0, 0.0]
    ase.io.write(folder / "frames.extxyz", [good, squeezed, good])
    return folder


@pytest.mark.parametrize("ranks", [1, 2])
def test_keep_going_reports_every_bad_structure_and_exits_3(good_and_bad, ranks):
    """`thermo a b c frames --keep-going --json`: every good structure gives its result, every
    bad one a failed JSON line with its reason, exit 3; the same on 2 ranks, printed once."""
    import json

    f = good_and_bad
    files = [str(f / n) for n in ("a.extxyz", "b.extxyz", "c.extxyz", "frames.extxyz")]
    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    launcher = [shutil.which("mpiexec"), *flags, "-n", "2"] if ranks == 2 else []
    proc = subprocess.run(launcher + HPCVIB + ["thermo", *files, "-p", "Fe_mm", "--json", "--keep-going"],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    failed = {r["structure"]: r["error"] for r in rows if r.get("status") == "failed"}
    done = [r["structure"] for r in rows if "ln_det_prime" in r]
    assert sorted(failed) == sorted([files[1], f"{files[3]}@1"])
    assert "0.300 Å apart" in failed[f"{files[3]}@1"]
    assert sorted(done) == sorted([files[0], files[2], f"{files[3]}@0", f"{files[3]}@2"])
    assert proc.stderr.count("2 of 6 structures failed") == 1 and "Traceback" not in proc.stderr


def test_without_keep_going_the_first_bad_structure_ends_the_command(good_and_bad):
    f = good_and_bad
    proc = subprocess.run(HPCVIB + ["thermo", str(f / "a.extxyz"), str(f / "frames.extxyz"), "-p", "Fe_mm",
                                    "--json"], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2 and proc.stdout == "" and "frames.extxyz@1" in proc.stderr


def test_keep_going_on_predict_and_descriptors(good_and_bad):
    import json

    f = good_and_bad
    for cmd in (["predict", "Fe_mm-Sf-linear"], ["descriptors"]):
        proc = subprocess.run(HPCVIB + cmd + [str(f / "frames.extxyz"), str(f / "b.extxyz"), "--json",
                                              "--keep-going"], capture_output=True, text=True, env=_env(),
                              timeout=300)
        assert proc.returncode == 3, proc.stderr[-2000:]
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [r.get("status") == "failed" for r in rows].count(True) == 2 and len(rows) == 4


@pytest.mark.parametrize("extra,message", [
    (["--modes", "100000"], "--modes 100000, but D has only 3N − 3 = 159 non-zero eigenvalues"),
    (["--dos-plot", "x.png"], "--dos-plot draws the full spectrum: add --spectrum"),
])
def test_arguments_are_checked_before_work(cell, extra, message):
    proc = subprocess.run(HPCVIB + ["thermo", str(cell), "-p", "Fe_mm"] + extra, capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_suffix_suggests_format(tmp_path):
    weird = tmp_path / "cell.weird"
    weird.write_text("1\n\nFe 0 0 0\n")
    proc = subprocess.run(HPCVIB + ["thermo", str(weird), "-p", "Fe_mm"], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 2 and "--format" in proc.stderr and str(weird) in proc.stderr


def test_bad_petsc_option_value_is_one_line(cell):
    proc = subprocess.run(HPCVIB + ["--petsc-options=-hpcvib_det_mat_mumps_icntl_7 banana", "thermo", str(cell),
                                    "-p", "Fe_mm", "--solver", "mumps"], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line, = [x for x in proc.stderr.splitlines() if x.startswith("hpcvib: error:")]
    assert "banana" in line and "[0]" not in proc.stderr


def test_full_disk_during_a_job_is_one_line_and_the_job_resumes(tmp_path):
    """A file-size limit (a full disk or a quota for the writer) hit while a job merges its records:
    one line naming the file, exit 2, no temporary file left (HDF5 used to segfault here); the
    same command without the limit then finishes, with the results of an unhindered run."""
    import json

    def job(folder):
        path = folder / "job.toml"
        path.write_text(f'[job]\ndatabase = "{folder / "db.h5"}"\n[system]\npotential = "Fe_mm"\ncell = 4\n'
                        '[generate]\nvacancies = [1, 2]\ninterstitials = []\ncrowdions = false\n'
                        '[relax]\nstrains = [0.0, 0.01]\n[thermo]\n[descriptors]\n')
        return str(path)

    limited, free = tmp_path / "limited", tmp_path / "free"
    limited.mkdir(), free.mkdir()
    script = ("import sys, resource; from mpi4py import MPI; "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (60000, 60000)); "
              "from hpcvib.cli.commands import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", script, "-q", "run", job(limited)], capture_output=True, text=True,
                          env=_env(), timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("hpcvib: error:") == 1 and "write failed" in proc.stderr
    assert "Traceback" not in proc.stderr and "SEGV" not in proc.stderr
    leftovers = [os.path.join(d, f) for d, _, files in os.walk(limited) for f in files if f.startswith(".tmp-")]
    assert leftovers == []
    for folder in (limited, free):
        subprocess.run(HPCVIB + ["-q", "run", job(folder)], capture_output=True, text=True, env=_env(), timeout=600,
                       check=True)

    def results(folder):
        status = subprocess.run(HPCVIB + ["export", str(folder / "db.h5"), "-o", str(folder / "t.csv")],
                                capture_output=True, text=True, env=_env(), timeout=300, check=True)
        assert status.returncode == 0
        import csv

        return {r["key"]: (r["thermo_status"], r.get("S_f_kB")) for r in csv.DictReader(open(folder / "t.csv"))}
    assert results(limited) == results(free) and len(results(free)) >= 4
    assert json.loads(subprocess.run(HPCVIB + ["status", str(limited / "db.h5"), "--json"], capture_output=True,
                                     text=True, env=_env(), timeout=300).stdout)["counts"]["thermo"]["ok"] >= 4


def test_job_killed_on_two_ranks_resumes_to_identical_results(tmp_path):
    """SIGKILL of every process of a 2-rank job in the middle of its relax stage, then the same
    command again: the same records as a job that was never interrupted."""
    import csv
    import signal
    import time

    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    mpi = [shutil.which("mpiexec"), *flags, "-n", "2"]

    def job(folder):
        folder.mkdir()
        path = folder / "job.toml"
        path.write_text(f'[job]\ndatabase = "{folder / "db.h5"}"\n[system]\npotential = "Fe_mm"\ncell = 4\n'
                        '[generate]\nvacancies = [1, 2]\ninterstitials = [1]\norientations = ["110"]\n'
                        'crowdions = false\n[relax]\nstrains = [0.0, 0.01]\n[thermo]\n[descriptors]\n')
        return str(path)

    killed, clean = job(tmp_path / "killed"), job(tmp_path / "clean")
    proc = subprocess.Popen(mpi + HPCVIB + ["-q", "run", killed], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pending = tmp_path / "killed" / "db.h5.d"
    deadline = time.time() + 300
    while time.time() < deadline:
        if pending.is_dir() and sum(f.endswith("~relax.h5") for f in os.listdir(pending)) >= 2:
            break
        time.sleep(0.02)
    subprocess.run(["pkill", "-KILL", "-f", killed])
    proc.wait(timeout=60)
    assert not any(f.endswith("~thermo.h5") for f in os.listdir(pending))  # killed mid-job
    for path in (killed, clean):
        subprocess.run(mpi + HPCVIB + ["-q", "run", path], env=_env(), capture_output=True, timeout=600, check=True)

    def rows(path):
        out = os.path.join(os.path.dirname(path), "t.csv")
        subprocess.run(HPCVIB + ["export", os.path.join(os.path.dirname(path), "db.h5"), "-o", out], env=_env(),
                       capture_output=True, timeout=300, check=True)
        keep = ("key", "relax_status", "energy_eV", "thermo_status", "ln_det_prime", "S_f_kB")
        return [{k: r.get(k) for k in keep} for r in csv.DictReader(open(out))]
    assert rows(killed) == rows(clean) and len(rows(clean)) >= 6
