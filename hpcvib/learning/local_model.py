"""A per-atom surrogate of the formation entropy, trained on the exact local entropies ΔS_i
(:mod:`hpcvib.physics.local_entropy`; paper Eq. 7–10) instead of on the configuration total.

Features of atom i in a defect cell at strain ε (perfect crystal of N_b atoms at the same strain,
sums D_b, DD_b):

    x_i = δ^i ⊕ q(D^i D^iᵀ − DD_b / N_b),   δ^i = D^i − D_b / N_b,

so that Σ_i x_i = ΔD ⊕ q(ΔDD) — *exactly* the configuration-level features of Eq. 14 and 17
(:func:`hpcvib.learning.models.entropy_features`). A model linear in x (linear: the δ block; EQML:
both) therefore predicts S_f = Σ_i w·x_i = w·ΣX with the same functional form as the
configuration-level model; only the training data differ: ΔS_i of every atom instead of one S_f
per configuration.

Rows per configuration: the :data:`CORE_ATOMS` atoms whose descriptors differ most from the
bulk (largest |δ^i|) one by one, and the remaining atoms lumped into one far-field row (Σ x_i,
Σ ΔS_i) — for a model linear in x a sum of rows is itself an exact training row, and it keeps
the design matrix small (33 rows instead of 1 023 per configuration).

The learning curve (:func:`local_learning_curve`) splits *configurations* with the permutations
of :func:`hpcvib.learning.models.learning_curve` (``default_rng([seed, f, s])``), trains the
per-atom model on the rows of the training configurations and the configuration-level model
on their totals, and scores both on the same test configurations' exact S_f.
"""

from __future__ import annotations

import numpy as np

from hpcvib.errors import InputError
from hpcvib.learning.models import mae, make_model, quadratic_features, rmse

#: atoms per configuration kept as individual training rows (the rest: one lumped row)
CORE_ATOMS = 32


def local_dataset(db, core: int = CORE_ATOMS) -> dict:
    """Configurations of ``db`` with exact per-atom ΔS_i (job ``[thermo] local``) and per-atom
    descriptors (``[descriptors] per_atom``): their rows (``core`` atoms one by one, the rest
    lumped, :func:`atom_rows`), totals and labels."""
    from hpcvib.database import family_label

    configs = db.read("configs")
    out = {"keys": [], "rows": [], "targets": [], "X": [], "y": [], "strains": [], "kinds": []}
    for key, st in sorted(configs.items()):
        th, de = st.get("thermo"), st.get("descriptors")
        if th is None or de is None or not th.ok or not de.ok:
            continue
        if "dS_local" not in th.data or "per_atom" not in de.data:
            continue
        rows, targets = atom_rows(de.data["per_atom"], np.asarray(th.data["dS_local"]), de.data["dD"], de.data["dDD"],
                                  core)
        out["keys"].append(key)
        out["rows"].append(rows)
        out["targets"].append(targets)
        out["X"].append(rows.sum(axis=0))
        out["y"].append(float(th.attrs["S_f_kB"]))
        out["strains"].append(float(th.attrs["strain"]))
        out["kinds"].append(family_label(st.get("generate")))
    if not out["keys"]:
        raise InputError(f"{db.path}: no configuration has per-atom ΔS_i and per-atom descriptors "
                         "(run the job with [thermo] local = true and [descriptors] per_atom = true)")
    out["X"], out["y"], out["strains"] = np.array(out["X"]), np.array(out["y"]), np.array(out["strains"])
    return out


def atom_rows(per_atom: np.ndarray, ds: np.ndarray, dD: np.ndarray, dDD: np.ndarray,
              core: int = CORE_ATOMS) -> tuple[np.ndarray, np.ndarray]:
    """Training rows (x_i of the module docstring) and targets ΔS_i of one configuration: the
    ``core`` atoms of largest |δ^i| and one lumped row of the others. The bulk per-atom sums are
    recovered from the configuration's excesses: D_b/N_b = (Σ D^i − ΔD)/N, DD_b/N_b likewise."""
    per_atom = np.asarray(per_atom, dtype=float)
    n, k = per_atom.shape
    if len(ds) != n:
        raise InputError(f"{n} per-atom descriptors but {len(ds)} local entropies")
    d_bulk = (per_atom.sum(axis=0) - np.asarray(dD)) / n
    dd_bulk = (per_atom.T @ per_atom - np.asarray(dDD).reshape(k, k)) / n
    delta = per_atom - d_bulk
    outer = per_atom[:, :, None] * per_atom[:, None, :] - dd_bulk
    x = np.hstack([delta, quadratic_features(outer)])
    order = np.argsort(-np.linalg.norm(delta, axis=1), kind="stable")
    core_idx, far_idx = order[:core], order[core:]
    rows = np.vstack([x[core_idx], x[far_idx].sum(axis=0, keepdims=True)])
    targets = np.append(ds[core_idx], ds[far_idx].sum())
    return rows, targets


def _design(rows: np.ndarray, strain: float, model: str) -> np.ndarray:
    k = _n_linear(rows.shape[1])
    x = rows[:, :k] if model == "linear" else rows
    return np.hstack([x, np.full((len(x), 1), strain)])


def _n_linear(width: int) -> int:
    from hpcvib.learning.models import n_linear_from_width

    return n_linear_from_width(width)


def per_atom_training_set(data: dict, train: np.ndarray, model: str):
    """(X, y) of the per-atom rows of the configurations ``train`` (strain column last)."""
    X = np.vstack([_design(data["rows"][c], float(data["strains"][c]), model) for c in train])
    y = np.concatenate([data["targets"][c] for c in train])
    return X, y


def configuration_features(data: dict, configs: np.ndarray, model: str) -> np.ndarray:
    """Σ_i x_i (= ΔD ⊕ q(ΔDD)) of each configuration with its strain column."""
    return np.vstack([_design(data["X"][c][None, :], float(data["strains"][c]), model) for c in configs])


def local_learning_curve(data: dict, model: str = "linear", train_sizes=(10, 20, 40, 80, 160),
                         n_splits: int = 20, seed: int = 0, volume_per_atom0: float = 1.0) -> list[dict]:
    """Test RMSE / MAE of S_f (k_B) against the number of training configurations for the
    per-atom model and the configuration-level model of the same form, on the same splits:
    for each size m and split s the configurations are permuted by ``default_rng([seed, m, s])``;
    the first m train, the rest test. ``volume_per_atom0`` (Å³ per site of the unstrained host)
    is what the per-strain models store (:class:`hpcvib.learning.models.StrainClassModel`)."""
    n = len(data["y"])
    curves = []
    for m in train_sizes:
        if m >= n - 1:
            continue
        errs = {"per_atom": [], "configuration": []}
        for s in range(n_splits):
            perm = np.random.default_rng([seed, m, s]).permutation(n)
            train, test = perm[:m], perm[m:]
            x_test = configuration_features(data, test, model)
            for kind in errs:
                if kind == "per_atom":
                    X, y = per_atom_training_set(data, train, model)
                else:
                    X, y = configuration_features(data, train, model), data["y"][train]
                try:
                    fitted = make_model(model, "S_f", per_strain=True, volume_per_atom0=volume_per_atom0).fit(X, y)
                except InputError:
                    errs[kind].append((np.nan, np.nan))
                    continue
                pred = fitted.predict(x_test)
                errs[kind].append((rmse(data["y"][test], pred), mae(data["y"][test], pred)))
        row = {"model": model, "train_configurations": int(m), "n_splits": n_splits}
        for kind, e in errs.items():
            e = np.array(e)
            row.update({f"{kind}_test_rmse": float(np.nanmean(e[:, 0])), f"{kind}_test_rmse_std": float(np.nanstd(e[:, 0])),
                        f"{kind}_test_mae": float(np.nanmean(e[:, 1]))})
        curves.append(row)
    return curves
