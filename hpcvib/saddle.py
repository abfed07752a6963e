"""Locating stationary points with the exact sparse Hessian.

* :func:`newton_refine` — Newton steps x ← x + H⁻¹F with one atom pinned (H_(-k) is regular at a
  stationary point of a periodic cell; the pinned atom only fixes the free translation). Converges
  quadratically to the nearby minimum *or saddle*, whatever its index.
* :func:`neb_saddle` — climbing-image NEB (ASE) between two minima, then :func:`newton_refine`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as spla

from .errors import ConvergenceError
from .log import get_logger
from .potentials import load_potential


def newton_refine(atoms, potential, ftol: float = 1e-9, max_steps: int = 30, max_step_length: float = 0.2):
    """Copy of ``atoms`` at the stationary point next to it (max force < ``ftol`` eV/Å).

    Each step solves H_(-k) Δx = F_(-k) by sparse LU (k = atom 0); steps longer than
    ``max_step_length`` Å (per atom) are scaled down. Raises ConvergenceError otherwise.
    """
    log = get_logger("saddle")
    pot = load_potential(potential)
    atoms = atoms.copy()
    atoms.calc = None
    n = len(atoms)
    keep = np.arange(3, 3 * n)
    for step in range(max_steps):
        forces = pot.evaluate(atoms).forces
        fmax = float(np.abs(forces).max())
        log.debug("Newton step %d: max |F| = %.3e eV/Å", step, fmax)
        if fmax < ftol:
            return atoms
        H = pot.hessian(atoms).tocsc()[keep][:, keep]
        dx = np.zeros(3 * n)
        dx[keep] = spla.spsolve(H, forces.ravel()[keep])
        dx = dx.reshape(n, 3)
        longest = np.linalg.norm(dx, axis=1).max()
        if longest > max_step_length:
            dx *= max_step_length / longest
        atoms.positions += dx
    raise ConvergenceError(f"Newton refinement did not reach |F| < {ftol:g} eV/Å in {max_steps} steps")


def relax(atoms, potential, fmax: float = 1e-6, steps: int = 20000, refine: bool = True):
    """Relax at fixed cell: FIRE to 1e-3 eV/Å, L-BFGS to ``fmax``, then Newton steps (exact
    Hessian) to 1e-9 eV/Å when ``refine``."""
    from ase.optimize import FIRE, LBFGS

    from .calculator import HpcvibCalculator

    work = atoms.copy()
    work.calc = HpcvibCalculator(potential)
    FIRE(work, logfile=None).run(fmax=max(fmax, 1e-3), steps=steps)
    if not LBFGS(work, logfile=None).run(fmax=fmax, steps=steps):
        raise ConvergenceError(f"relaxation did not reach {fmax:g} eV/Å in {steps} steps")
    work.calc = None
    return newton_refine(work, potential) if refine else work


def neb_saddle(initial, final, potential, n_images: int = 5, fmax: float = 0.01, steps: int = 3000):
    """Saddle between two relaxed minima: climbing-image NEB (improved tangent) to ``fmax``,
    then Newton refinement of the climbing image. Returns (saddle, images)."""
    from ase.mep import NEB
    from ase.optimize import FIRE

    from .calculator import HpcvibCalculator

    images = [initial.copy()] + [initial.copy() for _ in range(n_images)] + [final.copy()]
    for im in images:
        im.calc = HpcvibCalculator(potential)
    neb = NEB(images, climb=True, method="improvedtangent", allow_shared_calculator=False)
    neb.interpolate()
    if not FIRE(neb, logfile=None).run(fmax=fmax, steps=steps):
        raise ConvergenceError(f"CI-NEB did not reach {fmax:g} eV/Å in {steps} steps")
    top = max(images[1:-1], key=lambda im: im.get_potential_energy())
    return newton_refine(top, potential), images
