"""Prismatic dislocation loops (hpcvib.geometry.loops) and their relaxation in O(N) memory
(hpcvib.landscape.krylov_minimum): geometry against the analytic row lattice, Newton–CG against
the dense exact route, the job family and the CLI."""

import json

import numpy as np
import pytest
from conftest import fe_a0, serial_only

from hpcvib.errors import InputError
from hpcvib.geometry.defects import build_defect, generate_families
from hpcvib.geometry.loops import loop_rows, loop_spec
from hpcvib.potentials import load_potential


def _projected(sites, step):
    """Sites projected on the plane normal to the row direction (units a0/2)."""
    b = np.asarray(step, float) / np.linalg.norm(step)
    return sites - np.outer(sites @ b, b)


@pytest.mark.parametrize("burgers,step,spacing", [("111", (1, 1, 1), 2 * np.sqrt(2 / 3)), ("100", (2, 0, 0), np.sqrt(2))])
def test_seven_row_loop_is_a_hexagon_or_square_ring_of_the_row_lattice(burgers, step, spacing):
    """Rows along ½<111> project on a triangular lattice of spacing a0√(2/3), rows along <100> on a
    square lattice of spacing a0/√2·... (centred square: nearest rows a0/√2 apart); the 7 rows of a
    pure-edge loop are the centre row and its nearest neighbours (6 of the triangular lattice; for
    the square lattice the 4 nearest and then the next shell, cut by the deterministic tie rule)."""
    sites = loop_rows(7, burgers).astype(float)
    proj = _projected(sites, step)
    assert len({tuple(np.round(p, 6)) for p in proj}) == 7            # one site per row
    r = np.sort(np.linalg.norm(proj, axis=1))
    assert r[0] == pytest.approx(0.0, abs=1e-12)
    if burgers == "111":
        assert np.allclose(r[1:], spacing)                            # the hexagon
    else:
        assert np.allclose(r[1:5], spacing) and np.all(r[5:] > spacing + 0.1)
    # each site is the one of its row nearest the habit plane (within half a row step)
    b = np.asarray(step, float)
    normal = b / np.linalg.norm(b)
    assert np.all(np.abs(sites @ normal) <= 0.5 * np.linalg.norm(b) + 1e-12)


def test_loop_disc_is_the_nearest_rows_for_a_tilted_habit_plane():
    """A ½[111] loop on a (110) habit plane: the chosen rows' crossing points with the plane are
    the nearest ones — no row left out is closer than the farthest row taken."""
    n = 40
    b = np.array([1.0, 1.0, 1.0]) / np.sqrt(3)
    normal = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    chosen = loop_rows(n, "111", "110").astype(float)
    t = chosen @ normal / (b @ normal)
    cross = chosen - t[:, None] * b
    assert np.allclose(cross @ normal, 0.0, atol=1e-12)
    # all rows near the origin: crossing points of every bcc site's row
    r = np.arange(-14, 15)
    grid = np.array(np.meshgrid(r, r, r, indexing="ij")).reshape(3, -1).T
    grid = grid[(grid % 2 == grid[:, :1] % 2).all(axis=1)].astype(float)
    tg = grid @ normal / (b @ normal)
    all_cross = np.unique(np.round(grid - tg[:, None] * b, 6), axis=0)
    chosen_set = {tuple(p) for p in np.round(cross, 6)}
    others = np.array([p for p in all_cross if tuple(p) not in chosen_set])
    assert np.linalg.norm(cross, axis=1).max() <= np.linalg.norm(others, axis=1).min() + 1e-9


def test_loop_cells_count_atoms_and_reject_bad_input():
    a0 = fe_a0()
    assert len(build_defect(loop_spec("I", 19), 8, a0)) == 1024 + 19
    assert len(build_defect(loop_spec("V", 19, "100"), 8, a0)) == 1024 - 19
    assert loop_spec("I", 19).key == "I19-loop111-s000-v00"
    assert loop_spec("I", 19, "111", "110").key == "I19-loop111-h110-s000-v00"
    with pytest.raises(InputError, match="contains"):
        loop_rows(10, "111", "1-10")                                   # [111] lies in (1-10)
    with pytest.raises(InputError, match="Burgers"):
        loop_rows(10, "110")
    with pytest.raises(InputError, match="does not fit"):
        build_defect(loop_spec("I", 200), 6, a0)


def test_loop_family_in_a_job():
    from hpcvib.workflow.jobfile import _families

    specs = generate_families([{"kind": "I", "sizes": [7, 19], "loop_burgers": "111"},
                               {"kind": "V", "sizes": [7], "loop_burgers": "100"}])
    assert [s.key for s in specs] == ["I7-loop111-s000-v00", "I19-loop111-s000-v00", "V7-loop100-s000-v00"]
    assert _families([{"kind": "I", "sizes": [200], "loop_burgers": "111", "loop_habit": "110"}]) is None
    assert "contains" in _families([{"kind": "I", "sizes": [7], "loop_burgers": "111", "loop_habit": "1-10"}])
    assert "does not apply" in _families([{"kind": "I", "sizes": [7], "loop_burgers": "111", "shell_radius": 2}])
    assert "needs loop_burgers" in _families([{"kind": "I", "sizes": [7], "loop_habit": "110"}])


def test_newton_krylov_relaxation_equals_the_dense_exact_route(comm):
    """A 7-SIA ½<111> loop in a (6 a0)³ cell relaxed by FIRE + Newton–CG (any rank count) and by
    the exact dense route (FIRE + dense Newton, inertia by Cholesky): the same minimum."""
    from hpcvib.landscape.exact_minimum import relax_exact
    from hpcvib.landscape.krylov_minimum import newton_krylov_minimum

    pot = load_potential("Fe_mm")
    start = build_defect(loop_spec("I", 7), 6, fe_a0())
    start.positions += np.random.default_rng(7).normal(0.0, 0.02, start.positions.shape)  # break the symmetry
    krylov = newton_krylov_minimum(comm, start, pot, fmax=1e-6, check_modes=6)
    exact = relax_exact(start, pot, fmax=1e-6)
    assert krylov.max_force < 1e-6 and exact.n_negative == 0
    assert krylov.energy == pytest.approx(exact.energy, abs=1e-8)
    shift = krylov.atoms.positions - exact.atoms.positions
    assert np.abs(shift - shift.mean(axis=0)).max() < 1e-6           # equal up to a rigid translation
    assert krylov.is_minimum and krylov.counts["newton_steps"] <= 10
    # the partial-spectrum check against the dense spectrum of the same configuration
    dense = np.linalg.eigvalsh(pot.hessian(krylov.atoms).toarray()
                               / np.sqrt(np.outer(np.repeat(krylov.atoms.get_masses(), 3),
                                                  np.repeat(krylov.atoms.get_masses(), 3))))
    assert np.allclose(krylov.lowest, dense[:6], atol=1e-7)


def test_newton_krylov_leaves_a_symmetric_saddle_along_its_unstable_mode(comm):
    """The ideal 7-dumbbell platelet relaxes (FIRE, dense route) onto a stationary point with 6
    negative eigenvalues; the Newton–CG route notices (partial spectrum), leaves it along the
    unstable mode and ends at a minimum that the exact dense Cholesky confirms (inertia 0)."""
    from hpcvib.landscape.exact_minimum import newton_minimum, relax_exact
    from hpcvib.landscape.krylov_minimum import newton_krylov_minimum

    pot = load_potential("Fe_mm")
    start = build_defect(loop_spec("I", 7), 6, fe_a0())
    assert relax_exact(start, pot, fmax=1e-6).n_negative == 6
    krylov = newton_krylov_minimum(comm, start, pot, fmax=1e-6, check_modes=5)
    assert krylov.counts["escapes"] >= 1 and krylov.is_minimum
    confirmed = newton_minimum(krylov.atoms, pot, fmax=1e-6)
    assert confirmed.n_negative == 0 and confirmed.energy == pytest.approx(krylov.energy, abs=1e-8)


@serial_only()
def test_build_and_modes_commands(tmp_path):
    from test_cli import run

    out = tmp_path / "loop.extxyz"
    proc = run("build", "--cell", "6", "--loop", "7", "-p", "Fe_mm", "--relax", "-o", str(out), "--json")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["family"] == "I7-loop111-s000-v00" and summary["n_atoms"] == 439
    assert summary["is_minimum"] is True and summary["max_force_eV_A"] < 1e-6
    lam = {}
    for route in ("shift-invert", "preconditioned"):
        proc = run("modes", str(out), "-p", "Fe_mm", "-k", "8", "--route", route, "--json")
        lam[route] = json.loads(proc.stdout.strip().splitlines()[-1])["eigenvalues"]
    assert np.allclose(lam["shift-invert"], lam["preconditioned"], atol=1e-7)
    bad = run("build", "--cell", "6", "--loop", "7", "--habit", "1-10", "-p", "Fe_mm", "-o", str(tmp_path / "x.xyz"),
              check=False)
    assert bad.returncode == 2 and "contains" in bad.stderr and not (tmp_path / "x.xyz").exists()
