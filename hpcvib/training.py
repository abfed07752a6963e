"""Datasets from the reference database and the fit stage (``hpcvib fit``, job table [fit]).

Formation entropy: X from ΔD, ΔDD (descriptor excesses against the perfect cell at the same
strain, THEORY §6), y = exact S_f (Eq. 20). Events: X = D_m ⊕ D_s, y = ln(ν*/1 THz) or ΔE.
For every model: the fit on all data (saved as JSON), a learning curve (Sec. III B), and the
predictions of one seeded 80/20 split for parity plots. Results go to ``<output>/fit.json``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .errors import InputError
from .log import get_logger
from .models import (SavedModel, entropy_features, event_features, learning_curve, make_model, mae, rmse)
from .parallel import root_only


def entropy_dataset(db) -> dict:
    """Configurations with ok thermo and descriptors: keys, ΔD, ΔDD, S_f, labels, settings."""
    configs = db.read("configs")
    keys, dD, dDD, y, kinds, strains = [], [], [], [], [], []
    settings = None
    for key, st in sorted(configs.items()):
        th, de = st.get("thermo"), st.get("descriptors")
        if th is None or de is None or not th.ok or not de.ok:
            continue
        keys.append(key)
        dD.append(de.data["dD"])
        dDD.append(de.data["dDD"])
        y.append(th.attrs["S_f_kB"])
        gen = st.get("generate")
        kinds.append(f"{gen.attrs['kind']}{gen.attrs['size']}" if gen is not None else "?")
        strains.append(float(th.attrs["strain"]))
        settings = de.attrs["settings"]
    if not keys:
        raise InputError(f"{db.path}: no configuration has both exact S_f and descriptors yet")
    return {"keys": keys, "dD": np.array(dD), "dDD": np.array(dDD), "y": np.array(y), "kinds": kinds,
            "strains": np.array(strains), "settings": settings}


def event_dataset(db, target: str) -> dict:
    """Events with ok results: keys, D_m ⊕ D_s, y (ln_nu or dE), and both targets."""
    events = db.read("events")
    keys, X, ln_nu, de = [], [], [], []
    settings = None
    for key, st in sorted(events.items()):
        ev = st.get("event")
        if ev is None or not ev.ok or "D_min" not in ev.data:
            continue
        keys.append(key)
        X.append(event_features(ev.data["D_min"], ev.data["D_saddle"])[0])
        ln_nu.append(ev.attrs["ln_nu_THz"])
        de.append(ev.attrs["delta_E_eV"])
        settings = ev.attrs.get("settings")
    if not keys:
        raise InputError(f"{db.path}: no events with descriptors in the database")
    ln_nu, de = np.array(ln_nu), np.array(de)
    return {"keys": keys, "X": np.array(X), "y": ln_nu if target == "ln_nu" else de, "ln_nu": ln_nu,
            "delta_E": de, "settings": settings}


def design_matrix(data: dict, model: str) -> np.ndarray:
    if "X" in data:
        return data["X"]
    return entropy_features(data["dD"], data["dDD"] if model == "eqml" else None)


def fit_one(comm, data: dict, target: str, model_name: str, fractions, n_splits: int, seed: int) -> tuple:
    """Fit on all data, learning curve, one 80/20 split for parity plots. Collective."""
    X, y = design_matrix(data, model_name), data["y"]
    model = make_model(model_name, target).fit(X, y)
    pred, std = model.predict(X, return_std=True)
    curve = learning_curve(comm, lambda: make_model(model_name, target), X, y, fractions, n_splits, seed)
    perm = np.random.default_rng([seed, 999]).permutation(len(y))
    n_test = max(1, int(round(0.2 * len(y))))
    test, train = perm[:n_test], perm[n_test:]
    split_model = make_model(model_name, target).fit(X[train], y[train])
    split_pred = split_model.predict(X)
    summary = {"target": target, "model": model_name, "n_samples": int(len(y)), "n_features": int(X.shape[1]),
               "fit_rmse": rmse(y, pred), "fit_mae": mae(y, pred), "mean_predicted_std": float(std.mean()),
               "split": {"train": train.tolist(), "test": test.tolist(),
                         "test_rmse": rmse(y[test], split_pred[test]), "train_rmse": rmse(y[train], split_pred[train])},
               "learning_curve": curve, "y": y.tolist(), "prediction_all_data": pred.tolist(),
               "prediction_split": split_pred.tolist(), "keys": data["keys"]}
    return model, summary


def fit_database(comm, db, targets=("S_f",), models=("linear", "eqml"), output: str = "models",
                 fractions=(0.1, 0.3, 0.5, 0.7, 0.9), n_splits: int = 100, seed: int = 0) -> dict:
    """Fit every (target, model) the database supports; save models and ``fit.json``. Collective."""
    log = get_logger("fit")
    prov = root_only(comm, db.provenance)
    results = {}
    for target in targets:
        try:
            data = root_only(comm, entropy_dataset if target == "S_f" else (lambda d: event_dataset(d, target)), db)
        except InputError as exc:
            log.info("fit %s: skipped (%s)", target, exc)
            continue
        for name in models:
            if target != "S_f" and name == "eqml":
                continue
            if name == "eqml" and len(data["y"]) < 10:
                log.info("fit %s/eqml: skipped (%d samples)", target, len(data["y"]))
                continue
            model, summary = fit_one(comm, data, target, name, fractions, n_splits, seed)
            log.info("fit %s/%s: %d samples, %d features, fit RMSE %.4f, learning-curve test RMSE at p=%.1f: %.4f",
                     target, name, summary["n_samples"], summary["n_features"], summary["fit_rmse"],
                     summary["learning_curve"][0]["test_fraction"], summary["learning_curve"][0]["test_rmse"])
            saved = SavedModel(model, target, name, data["settings"], prov.get("potential"),
                               prov.get("potential_sha256"),
                               {k: summary[k] for k in ("n_samples", "fit_rmse", "fit_mae")})
            path = os.path.join(output, f"{target}_{name}.json")
            root_only(comm, lambda: (os.makedirs(output, exist_ok=True), saved.save(path)))
            summary["model_file"] = path
            results[f"{target}/{name}"] = summary
    if not results:
        raise InputError(f"{db.path}: nothing to fit (no exact results with descriptors)")
    root_only(comm, _write_json, os.path.join(output, "fit.json"), results)
    return results


def _write_json(path, obj):
    from .fileio import atomic_output

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh)


def fit_database_models(comm, db, job, potential) -> dict:
    """The job's [fit] stage."""
    f = job["fit"]
    return fit_database(comm, db, ("S_f", "ln_nu", "dE"), f["models"], f["output"], f["test_fractions"],
                        f["splits"], job["job"]["seed"])
