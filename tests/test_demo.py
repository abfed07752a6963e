"""The built-in demo (what `make demo` runs), on a smaller cell, serially and on 2 ranks."""

import json

import pytest

from conftest import serial_only
from test_cli import run


@serial_only()
def test_demo_runs_and_reports_physical_numbers():
    results = [json.loads(run("demo", "--size", "4", "--json", mpi=mpi).stdout) for mpi in (0, 2)]
    serial, parallel = results
    assert serial["kinds"] == {"perfect": "minimum", "vacancy": "minimum", "saddle": "saddle"}
    assert 1.6 < serial["E_f_eV"] < 1.8          # Mendelev et al. 2003: 1.72 eV (large cells)
    assert 0.55 < serial["delta_E_eV"] < 0.75    # vacancy migration ≈ 0.64 eV
    assert serial["lambda_neg"] < 0
    for key in ("S_f_kB", "ln_nu_THz", "delta_E_eV"):
        assert parallel[key] == pytest.approx(serial[key], abs=1e-8)
