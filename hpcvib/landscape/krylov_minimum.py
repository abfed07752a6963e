"""Relaxation of large cells to tight forces in O(N) memory: FIRE, then inexact Newton steps whose
linear systems H dx = F are solved by conjugate gradients preconditioned with ICC(0)
(:func:`hpcvib.linalg.preconditioned.preconditioned_newton_step`), then a partial-spectrum check
that the end point is a minimum (:func:`hpcvib.linalg.preconditioned.preconditioned_lowest_modes`).

The exact route of :mod:`hpcvib.landscape.exact_minimum` factorises H densely and cannot go
beyond a few thousand atoms; FIRE or L-BFGS alone need thousands of steps to reach 1e-6 eV/Å in
a 128 000-atom loop cell, whose slowest modes are long elastic waves. Newton converges
quadratically whatever the cell size; each step costs one sparse Hessian and a CG solve whose
tolerance tightens with the force (η = min(0.1, √max|F|): superlinear convergence, Eisenstat &
Walker 1996).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hpcvib.constants import PAPER_EIGENVALUE_TOL
from hpcvib.errors import ConvergenceError
from hpcvib.log import get_logger

#: largest displacement of one atom in a Newton step (Å)
MAX_NEWTON_STEP = 0.3
#: cells above this many atoms relax by Newton–CG in a job whose [relax] method is auto
KRYLOV_AUTO_ATOMS = 20000
#: escapes from a saddle end point along its unstable mode
MAX_ESCAPES = 3
#: largest atomic displacement of such an escape (Å)
ESCAPE_DISPLACEMENT = 0.1
#: trust-region radius of Steihaug's CG where H is indefinite (preconditioner norm)
TRUST_RADIUS = 1.0
#: step halvings before a Newton direction is given up for FIRE
MAX_HALVINGS = 6


@dataclass
class KrylovMinimum:
    """A relaxed configuration and what it cost; ``lowest`` are the lowest eigenvalues of D
    (eV/(Å² amu), translations first) when the partial-spectrum check ran."""

    atoms: object
    energy: float
    max_force: float
    lowest: np.ndarray | None
    counts: dict = field(default_factory=dict)

    @property
    def is_minimum(self) -> bool | None:
        if self.lowest is None:
            return None
        return bool(self.lowest[0] > -PAPER_EIGENVALUE_TOL) if len(self.lowest) > 3 else None


def _max_force(forces: np.ndarray) -> float:
    return float(np.sqrt((forces ** 2).sum(axis=1)).max())


def newton_krylov_minimum(comm, atoms, potential, fmax: float = 1e-6, switch_fmax: float = 1e-2,
                          fire_steps: int = 20000, max_newton: int = 60, check_modes: int = 4,
                          max_escapes: int = MAX_ESCAPES) -> KrylovMinimum:
    """Relax ``atoms`` (not modified) at fixed cell to max |F| < ``fmax`` (eV/Å): FIRE to
    ``switch_fmax``, then Newton–CG steps (collective over ``comm``; every rank ends with the
    same positions). ``check_modes`` > 3: the lowest eigenvalues of D at the end (the three
    translations and ``check_modes`` − 3 others) decide :attr:`KrylovMinimum.is_minimum`; an end
    point with a negative one (a symmetric starting cluster often relaxes onto a saddle) is left
    along its unstable mode (largest atomic displacement :data:`ESCAPE_DISPLACEMENT`) and relaxed
    again, up to ``max_escapes`` times. Raises :class:`ConvergenceError` when ``max_newton``
    steps do not reach ``fmax``."""
    from hpcvib.linalg.hessian import assemble_hessian
    from hpcvib.linalg.preconditioned import preconditioned_lowest_modes

    work = atoms.copy()
    work.calc = None
    counts = {"force_calls": 0, "newton_steps": 0, "cg_iterations": 0, "fire_restarts": 0, "escapes": 0}
    t0 = time.perf_counter()
    lowest = None
    while True:
        energy, f_end = _relax_once(comm, work, potential, fmax, switch_fmax, fire_steps, max_newton, counts)
        if check_modes <= 3:
            break
        modes = preconditioned_lowest_modes(assemble_hessian(comm, work, potential), k=check_modes,
                                            want_vectors=True)
        lowest = modes.eigenvalues
        if lowest[0] >= -PAPER_EIGENVALUE_TOL or counts["escapes"] >= max_escapes:
            break
        counts["escapes"] += 1
        step = (modes.vectors[:, 0] / np.sqrt(np.repeat(work.get_masses(), 3))).reshape(-1, 3)
        work.positions += step * (ESCAPE_DISPLACEMENT / np.linalg.norm(step, axis=1).max())
        get_logger("relax").info("end point has λ = %.4g < 0: leaving it along that mode (escape %d)",
                                 lowest[0], counts["escapes"])
    counts["seconds"] = time.perf_counter() - t0
    return KrylovMinimum(work, energy, f_end, lowest, counts)


def _relax_once(comm, work, potential, fmax, switch_fmax, fire_steps, max_newton, counts) -> tuple:
    """FIRE, then Newton–CG steps, moving ``work`` in place; returns (energy, max |F|)."""
    from hpcvib.landscape.exact_minimum import fire
    from hpcvib.linalg.hessian import assemble_hessian
    from hpcvib.linalg.preconditioned import preconditioned_newton_step

    log = get_logger("relax")
    t0 = time.perf_counter()
    ev = potential.evaluate(work)
    counts["force_calls"] += 1
    if _max_force(ev.forces) > switch_fmax:
        _, calls = fire(work, potential, switch_fmax, fire_steps)
        counts["force_calls"] += calls
        ev = potential.evaluate(work)
        log.info("FIRE to %.1e eV/Å: %d force calls, %.1f s", switch_fmax, calls, time.perf_counter() - t0)

    def fire_to(target):
        nonlocal ev
        counts["fire_restarts"] += 1
        _, calls = fire(work, potential, target, fire_steps)
        counts["force_calls"] += calls
        ev = potential.evaluate(work)

    for _ in range(max_newton):
        f_now = _max_force(ev.forces)
        if f_now < fmax:
            break
        dh = assemble_hessian(comm, work, potential)
        try:
            dx, its = preconditioned_newton_step(dh, ev.forces, rtol=min(0.1, np.sqrt(f_now)))
        except ConvergenceError as exc:
            # negative curvature: Steihaug's truncated CG follows it to the trust-region boundary
            log.info("Newton step refused (%s): Steihaug CG step in a trust region", exc)
            try:
                dx, its = preconditioned_newton_step(dh, ev.forces, rtol=min(0.1, np.sqrt(f_now)),
                                                     trust_radius=TRUST_RADIUS)
            except ConvergenceError as exc2:
                log.info("Steihaug step refused (%s): FIRE to %.1e eV/Å", exc2, f_now / 10)
                fire_to(f_now / 10)
                continue
        del dh
        counts["newton_steps"] += 1
        counts["cg_iterations"] += its
        dx = dx.reshape(-1, 3)
        longest = float(np.linalg.norm(dx, axis=1).max())
        if longest > MAX_NEWTON_STEP:
            dx *= MAX_NEWTON_STEP / longest
        start = work.positions.copy()
        for _ in range(MAX_HALVINGS):
            work.positions = start + dx
            trial = potential.evaluate(work)
            counts["force_calls"] += 1
            if trial.energy < ev.energy or _max_force(trial.forces) < f_now:
                ev = trial
                break
            dx *= 0.5
        else:
            work.positions = start
            fire_to(f_now / 10)
        log.info("Newton–CG step %d: max|F| %.3e → %.3e eV/Å (%d CG its)", counts["newton_steps"], f_now,
                 _max_force(ev.forces), its)
        if _max_force(ev.forces) > switch_fmax:  # left the quadratic region: FIRE back into it
            fire_to(switch_fmax)
    f_end = _max_force(ev.forces)
    if f_end >= fmax:
        raise ConvergenceError(f"Newton–CG relaxation did not reach {fmax:g} eV/Å in {max_newton} steps "
                               f"(max |F| = {f_end:.3g} eV/Å)")
    return float(ev.energy), f_end
