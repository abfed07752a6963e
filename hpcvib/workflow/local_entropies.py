"""One entry point for exact local entropies, shared by ``hpcvib thermo --local`` and the job
option ``[thermo] local``: picks the route (:mod:`hpcvib.physics.local_entropy`), the atoms near
the defect (the activation rule of :func:`hpcvib.landscape.artn.activation_candidates`) and the
configuration's symmetry orbits (:func:`hpcvib.landscape.fingerprint.self_symmetry_orbits`)."""

from __future__ import annotations

import numpy as np

from hpcvib.errors import InputError
from hpcvib.parallel import root_only
from hpcvib.physics.local_entropy import (AUTO_DENSE_MAX_ATOMS, DEFAULT_LOCAL_TOL, LOCAL_ROUTES, LocalDecomposition,
                                          atoms_within, dense_local_decomposition, quadrature_local_decomposition)


def choose_local_route(route: str, n_atoms: int, radius: float | None) -> str:
    """``auto``: dense eigenpairs up to :data:`AUTO_DENSE_MAX_ATOMS` atoms (and no radius), else
    the Lanczos quadrature."""
    if route not in LOCAL_ROUTES:
        raise InputError(f"unknown local-entropy route {route!r} (use {', '.join(LOCAL_ROUTES)})")
    if route == "auto":
        return "dense" if n_atoms <= AUTO_DENSE_MAX_ATOMS and radius is None else "quadrature"
    if route == "dense" and radius is not None:
        raise InputError("a local radius selects atoms for the quadrature route (use route quadrature or auto)")
    return route


def atoms_near_defect(atoms, potential, radius: float | None, energies: np.ndarray | None = None) -> np.ndarray:
    """Atoms within ``radius`` (Å) of an atom whose environment is unlike the host's (energy or
    coordination: :func:`~hpcvib.landscape.artn.defect_atoms`); all when None. ``energies``: the
    per-atom energies (eV) when already computed."""
    from hpcvib.landscape.artn import defect_atoms

    if radius is None:
        return np.arange(len(atoms))
    if energies is None:
        energies = potential.evaluate(atoms).energies
    return atoms_within(atoms, defect_atoms(atoms, energies), radius)


def local_decomposition(dh, potential, atoms, route: str = "auto", radius: float | None = None,
                        tol: float = DEFAULT_LOCAL_TOL, symmetry: bool = True) -> LocalDecomposition:
    """Per-atom L_i of ``atoms`` (Hessian ``dh``, collective over ``dh.comm``) by ``route``."""
    from hpcvib.landscape.fingerprint import self_symmetry_orbits

    comm = dh.comm
    chosen = choose_local_route(route, len(atoms), radius)
    if chosen == "dense":
        return root_only(comm, dense_local_decomposition, potential, atoms)

    def selection():
        energies = potential.evaluate(atoms).energies  # once, for the defect region and the orbits
        orbits = self_symmetry_orbits(atoms, energies) if symmetry else None
        return atoms_near_defect(atoms, potential, radius, energies), orbits

    near, orbits = root_only(comm, selection)
    return quadrature_local_decomposition(dh, atoms, near, tol=tol, orbits=orbits)
