"""O(N) prediction with a saved surrogate model (``hpcvib predict``).

S_f of a defect cell: descriptors of the cell and of its perfect reference (same cell shape,
built automatically for bcc or given), ΔD = D − (N/N_b) D_b, ΔDD likewise (THEORY §6), then the
model. ln ν* and ΔE of an event: D_m ⊕ D_s of a minimum and a saddle (Eq. 27, 30).
Descriptor sums are computed over all ranks of ``comm`` (each rank its own atoms, then reduced).
"""

from __future__ import annotations

import time

import numpy as np

from hpcvib.errors import InputError


def settings_from_model(saved, jmax=None, rcut=None, full=None):
    """DescriptorSettings of the model, with explicit overrides (checked against the model by
    :meth:`SavedModel.check_compatible`)."""
    from hpcvib.learning.descriptors import DescriptorSettings

    d = saved.descriptor_settings
    settings = DescriptorSettings(jmax=float(d["jmax"] if jmax is None else jmax),
                                  rcut=float(d["rcut"] if rcut is None else rcut),
                                  full=bool(d["full"] if full is None else full),
                                  rfac0=float(d["rfac0"]), weights=d.get("weights") or None)
    return settings


def primitive_reference(reference, reps: int = 2):
    """A perfect cell of ``reps``³ conventional cells of the lattice and lattice parameter of the
    perfect bcc or fcc supercell ``reference`` (else ``reference`` itself). Every atom of a perfect
    Bravais crystal has the same environment (periodic images included), so D_b/N_b and DD_b/N_b
    — all that ΔD and ΔDD need — are the same for any supercell: the reference costs O(1)
    instead of O(N)."""
    from hpcvib.errors import InputError
    from hpcvib.geometry.structures import CUBIC_BASIS, cubic_reference_parameters, cubic_supercell

    try:
        lattice, n, a = cubic_reference_parameters(reference)
    except InputError:
        return reference
    if CUBIC_BASIS[lattice] * int(np.prod(n)) != len(reference):
        return reference
    small = cubic_supercell(lattice, reps, a, reference.get_chemical_symbols()[0])
    small.set_masses(np.full(len(small), reference.get_masses()[0]))
    return small


def per_atom_contributions(coef: np.ndarray, per_atom: np.ndarray, D_bulk: np.ndarray, n_bulk: int) -> np.ndarray:
    """w·(D^i − D_b/N_b) per atom for the linear S_f model with weights ``coef``: they sum to w·ΔD."""
    return (per_atom - D_bulk / n_bulk) @ coef


def host_strain(model, reference) -> float | None:
    """Isotropic strain of the perfect ``reference`` cell against the unstrained host of a
    per-strain model (:class:`~hpcvib.learning.models.StrainClassModel`); None for other models."""
    from hpcvib.learning.models import isotropic_strain

    v0 = getattr(model, "volume_per_atom0", None)
    if v0 is None:
        return None
    return isotropic_strain(abs(reference.get_volume()) / len(reference), v0)


def predict_entropy(comm, saved, atoms, reference, settings, per_atom: bool = False,
                    source: str = "<structure>") -> dict:
    """S_f ± std of one cell (and per-atom contributions when asked, linear model only)."""
    from hpcvib.learning.descriptors import descriptor_excess, descriptor_sums
    from hpcvib.learning.models import entropy_features

    t = time.perf_counter()
    keep = per_atom and saved.kind == "linear"
    d = descriptor_sums(comm, atoms, settings, keep_per_atom=keep)
    b = descriptor_sums(comm, reference, settings)
    d_d, d_dd = descriptor_excess(d, b.D, b.DD, b.n_atoms)
    X = entropy_features(d_d, d_dd[None] if saved.kind == "eqml" else None)
    strain = host_strain(saved.model, reference)
    if strain is not None:
        saved.model.check_strain(strain, source)
        X = np.hstack([X, [[strain]]])
    mean, std = saved.model.predict(X, return_std=True)
    out = {"target": "S_f", "prediction": float(mean[0]), "std": float(std[0]), "n_atoms": len(atoms),
           "S_f_kB": float(mean[0]), "S_f_std_kB": float(std[0]), "seconds": time.perf_counter() - t}
    if strain is not None:
        out["strain"] = strain
    if _has_pops(saved.model):
        out["S_f_std_pops_kB"] = float(saved.model.predict(X, return_std=True, uncertainty="pops")[1][0])
    if keep:
        coef = saved.model.coef_ if strain is None else saved.model.coef_at(strain)
        out["per_atom"] = per_atom_contributions(coef, d.per_atom, b.D, len(reference))
    return out


def _has_pops(model) -> bool:
    """Whether a fitted model carries POPS misspecification uncertainties."""
    model = getattr(model, "models_", [model])[0]
    inner = getattr(model, "quadratic_", model)
    return getattr(inner, "pops_sigma_", np.zeros((0, 0))).size > 0


def predict_event(comm, saved, minimum, saddle, settings) -> dict:
    from hpcvib.learning.descriptors import descriptor_sums
    from hpcvib.learning.models import event_features

    t = time.perf_counter()
    X = event_features(descriptor_sums(comm, minimum, settings).D, descriptor_sums(comm, saddle, settings).D)
    mean, std = saved.model.predict(X, return_std=True)
    return {"target": saved.target, "prediction": float(mean[0]), "std": float(std[0]), "n_atoms": len(minimum),
            "seconds": time.perf_counter() - t}


def predict_structures(comm, args, failures=None, show=None) -> list[dict]:
    """The ``predict`` command: rows of {structure, target, prediction, std, seconds}, each
    passed to ``show`` as soon as it is computed. ``failures``
    (:class:`~hpcvib.batches.ItemFailures`) decides whether a bad structure ends the command or
    is reported and skipped."""
    from hpcvib.batches import ItemFailures
    from hpcvib.geometry.structures import load_structures
    from hpcvib.learning.models import SavedModel
    from hpcvib.parallel import root_only
    from hpcvib.physics.thermo import perfect_cubic_reference

    failures = failures or ItemFailures(comm, keep_going=False)
    show = show or (lambda row: None)
    saved = root_only(comm, SavedModel.load, args.model)
    settings = settings_from_model(saved, getattr(args, "jmax", None), getattr(args, "rcut", None),
                                   getattr(args, "full", None))
    sha = None
    if args.potential:
        from hpcvib.potentials import load_potential

        sha = load_potential(args.potential).sha256
    saved.check_compatible(settings.as_dict(), sha, args.model)
    if args.output and saved.target == "S_f" and saved.kind != "linear":
        raise InputError(f"{args.model}: per-atom contributions need the linear model (got {saved.kind})")
    types = getattr(args, "types", None)
    frames = failures.good(load_structures(comm, args.structures, args.file_format, types=types,
                                           keep_going=failures.keep_going))
    rows = []

    def keep(row):
        rows.append(row)
        show(row)

    if saved.target == "S_f":
        ref = load_structures(comm, [args.reference], args.file_format, types=types)[0][1] if args.reference else None
        outputs = []

        def one(label, atoms):
            reference = ref if ref is not None else primitive_reference(perfect_cubic_reference(atoms, label))
            res = predict_entropy(comm, saved, atoms, reference, settings, per_atom=bool(args.output), source=label)
            if "per_atom" in res:
                a = atoms.copy()
                a.arrays["S_f_atom"] = res.pop("per_atom")
                a.info.update(S_f_predicted=res["prediction"], S_f_std=res["std"], structure=label)
                outputs.append(a)
            return {"structure": label, **res}

        for label, atoms in frames:
            row, ok = failures.run(label, lambda: one(label, atoms))
            if ok:
                keep(row)
        if args.output:
            root_only(comm, _write_extxyz, args.output, outputs)
    else:
        if len(frames) % 2:
            raise InputError(f"{args.model}: an event model needs MINIMUM SADDLE pairs, got {len(frames)} structures")
        for (lm, m), (ls, s) in zip(frames[::2], frames[1::2]):
            label = f"{lm} -> {ls}"
            row, ok = failures.run(label, lambda: {"structure": label, **predict_event(comm, saved, m, s, settings)})
            if ok:
                keep(row)
    return rows


def _write_extxyz(path, frames):
    from ase.io import write

    from hpcvib.fileio import atomic_output

    with atomic_output(path) as tmp:
        write(tmp, frames, format="extxyz")
