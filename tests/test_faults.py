"""Fault injection: a full disk (file-size limit), unwritable and missing paths, a potential
readable by one rank only — one-line errors, non-zero exit, nothing half-written, no hang."""

import os
import shutil
import subprocess
import sys

import ase.io
import pytest

from hpcvib.structures import bcc_supercell

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
              "from hpcvib.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", script, "-q", "hessian", str(cell), "-p", "Fe_mm", "-o", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"hpcvib: error: {out}:" in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("args", [["descriptors", "{cell}", "-p", "Fe_mm", "-o", "/proc/x.npz"],
                                  ["hessian", "{cell}", "-p", "Fe_mm", "-o", "/proc/H.mtx"],
                                  ["thermo", "{cell}", "-p", "Fe_mm", "-t", "300", "--local", "-o", "/proc/x.extxyz"],
                                  ["fit", "/nonexistent/db.h5"], ["status", "/nonexistent/db.h5"]])
def test_environment_errors_are_one_line(cell, args):
    proc = subprocess.run(HPCVIB + [a.format(cell=cell) for a in args], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("hpcvib: error:") == 1


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
