"""``hpcvib report DB``: Markdown report with PNG figures in the style of the paper.

Reads ``<fit output>/fit.json`` (written by the fit stage / ``hpcvib fit``) and the database;
figures: parity plots coloured by point density with learning-curve insets (Fig. 2–4), residual
histogram of ln(ν/ν̂) with the fitted normal (Fig. 3b), ΔE–ln ν scatter with bin means and the
marginal variance (Fig. 5). The closing table puts this database's numbers next to the paper's
(THEORY §7): they are quoted for comparison, never used in a computation.
"""

from __future__ import annotations

import json
import os

import numpy as np

from hpcvib.database import family_label, family_sort_key
from hpcvib.errors import InputError
from hpcvib.fileio import atomic_output

#: the paper's numbers (THEORY §7), for the side-by-side table only
PAPER = {
    "S_f/linear": ("RMSE of S_f, linear (k_B)", 0.82),
    "S_f/eqml": ("RMSE of S_f, EQML (k_B)", 0.34),
    "ln_nu/linear": ("RMSE of ln(ν/ν0), linear", 0.65),
    "dE/linear": ("RMSE of ΔE, linear (eV)", 0.09),
    "r_direct": ("Pearson r(ln ν, ΔE), direct", 0.61),
    "r_surrogate": ("Pearson r(ln ν, ΔE), surrogate", 0.65),
    "sigma_noise": ("σ of ln(ν/ν̂)", 0.653),
    "kappa": ("⟨κ⟩", 0.11),
}


def _density_colours(x, y, bins: int = 60) -> np.ndarray:
    h, xe, ye = np.histogram2d(x, y, bins=bins)
    ix = np.clip(np.searchsorted(xe, x, side="right") - 1, 0, bins - 1)
    iy = np.clip(np.searchsorted(ye, y, side="right") - 1, 0, bins - 1)
    return h[ix, iy]


def _savefig(fig, path):
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")


def parity_plot(path, summary: dict, label: str) -> None:
    """Exact vs predicted (80/20 split: test points outlined), density-coloured, learning curve inset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.array(summary["y"])
    yhat = np.array(summary["prediction_split"])
    test = np.array(summary["split"]["test"], dtype=int)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    density = _density_colours(y, yhat)
    order = np.argsort(density)
    ax.scatter(y[order], yhat[order], c=density[order], s=8, cmap="viridis", label="train")
    ax.scatter(y[test], yhat[test], facecolors="none", edgecolors="crimson", s=18, lw=0.8,
               label=f"test (RMSE {summary['split']['test_rmse']:.3g})")
    lo, hi = min(y.min(), yhat.min()), max(y.max(), yhat.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(f"exact {label}")
    ax.set_ylabel(f"surrogate {label}")
    ax.set_title(f"{summary['model']} model, {summary['n_samples']} samples")
    ax.legend(loc="upper left", fontsize=8)
    inset = ax.inset_axes([0.6, 0.1, 0.37, 0.32])
    p = [c["test_fraction"] for c in summary["learning_curve"]]
    inset.errorbar(p, [c["train_rmse"] for c in summary["learning_curve"]],
                   [c["train_rmse_std"] for c in summary["learning_curve"]], fmt="o-", ms=3, label="train")
    inset.errorbar(p, [c["test_rmse"] for c in summary["learning_curve"]],
                   [c["test_rmse_std"] for c in summary["learning_curve"]], fmt="s-", ms=3, label="test")
    inset.set_xlabel("test fraction p", fontsize=7)
    inset.set_ylabel("RMSE", fontsize=7)
    inset.tick_params(labelsize=6)
    inset.legend(fontsize=6)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def residual_histogram(path, summary: dict) -> float:
    """Histogram of ln(ν/ν̂) on the test points with the fitted normal (Fig. 3b); returns σ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.array(summary["y"])
    yhat = np.array(summary["prediction_split"])
    res = (y - yhat)[np.array(summary["split"]["test"], dtype=int)]
    mu, sigma = float(res.mean()), float(res.std(ddof=1)) if len(res) > 1 else 0.0
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.hist(res, bins=30, density=True, alpha=0.6)
    if sigma > 0:
        t = np.linspace(res.min(), res.max(), 200)
        ax.plot(t, np.exp(-0.5 * ((t - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)), "r-",
                label=f"N({mu:.3f}, {sigma:.3f}²)")
        ax.legend(fontsize=8)
    ax.set_xlabel("ln(ν/ν̂)")
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return sigma


def compensation_plot(path, ln_nu, delta_e, comp: dict, title: str) -> None:
    """ΔE–ln ν scatter with bin means ± 2σ (Fig. 5a/b) and the marginal variance (Fig. 5c/d)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = comp["marginal"]
    fig, (a, b) = plt.subplots(2, 1, figsize=(5.2, 6.2), sharex=True)
    a.scatter(delta_e, ln_nu, c=_density_colours(np.asarray(delta_e), np.asarray(ln_nu)), s=6, cmap="viridis")
    a.errorbar(m["centres"], m["mean"], 2 * m["mean_sem"], fmt="o", color="grey", ms=3)
    f = comp["fit"]
    t = np.linspace(np.min(delta_e), np.max(delta_e), 10)
    a.plot(t, f["gamma_per_eV"] * t + f["ln_nu_gamma"], "r-",
           label=f"γ = {f['gamma_per_eV']:.3f}/eV, ln νγ = {f['ln_nu_gamma']:.3f}, r = {comp['r']:.3f}")
    a.set_ylabel("ln(ν/ν0)")
    a.set_title(title)
    a.legend(fontsize=7)
    b.errorbar(m["centres"], m["variance"], 2 * m["variance_std"], fmt="o", ms=3)
    b.set_xlabel("ΔE (eV)")
    b.set_ylabel("V[ln ν | ΔE]")
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def write_report(db, job=None, fit_dir: str | None = None, output: str | None = None,
                 tables: list | None = None) -> str:
    """Write ``<output>/report.md`` and its figures; returns the report path. With ``tables``
    (training-table paths, ``db`` None) the statistics come from the merged tables
    (:func:`hpcvib.learning.training.read_training_tables`) and the per-atom section is left out."""
    from hpcvib.physics.compensation import compensation_analysis

    fit_dir = fit_dir or (job["fit"]["output"] if job else "models")
    output = output or (job["report"]["output"] if job else "report")
    fit_path = os.path.join(fit_dir, "fit.json")
    if not os.path.exists(fit_path):
        raise InputError(f"{fit_path}: no fit results (run the fit stage or hpcvib fit first)")
    with open(fit_path) as fh:
        fits = json.load(fh)
    os.makedirs(output, exist_ok=True)
    ours: dict = {}
    if tables:
        from hpcvib import __version__
        from hpcvib.learning.training import read_training_tables

        table_data, meta = read_training_tables(list(tables))
        names = ", ".join(f"`{t}`" for t in tables)
        lines = [f"# hpcvib report — {len(table_data['keys'])} configurations of {len(tables)} training table(s)", "",
                 f"Training tables {names}; potential {meta.get('potential')} (sha256 "
                 f"{str(meta.get('potential_sha256'))[:12]}…); hpcvib {__version__}.", ""]
    else:
        prov = db.provenance()
        lines = [f"# hpcvib report — {prov.get('job_name', os.path.basename(db.path))}", "",
                 f"Database `{db.path}`; potential {prov.get('potential')} (sha256 {str(prov.get('potential_sha256'))[:12]}…); "
                 f"hpcvib {prov.get('hpcvib_version')}.", ""]
    labels = {"S_f": "S_f (k_B)", "ln_nu": "ln(ν*/1 THz)", "dE": "ΔE (eV)"}
    for key, s in fits.items():
        target, model = key.split("/")
        png = f"parity_{target}_{model}.png"
        parity_plot(os.path.join(output, png), s, labels[target])
        ours[key] = s["learning_curve"][0]["test_rmse"]
        lines += [f"## {labels[target]} — {model} model", "",
                  f"{s['n_samples']} samples, {s['n_features']} features. RMSE on all data {s['fit_rmse']:.4f}, "
                  f"MAE {s['fit_mae']:.4f}; 80/20 split: train RMSE {s['split']['train_rmse']:.4f}, "
                  f"test RMSE {s['split']['test_rmse']:.4f}; mean predictive std {s['mean_predicted_std']:.4f}.", "",
                  f"![parity]({png})", "",
                  "| test fraction p | train RMSE | test RMSE | train MAE | test MAE |", "|---|---|---|---|---|"]
        lines += [f"| {c['test_fraction']:.1f} | {c['train_rmse']:.4f} ± {c['train_rmse_std']:.4f} | "
                  f"{c['test_rmse']:.4f} ± {c['test_rmse_std']:.4f} | {c['train_mae']:.4f} | {c['test_mae']:.4f} |"
                  for c in s["learning_curve"]]
        lines.append("")
        lines += _fit_diagnostics_lines(s)
        if "calibration" in s:
            png_cal = f"calibration_{target}_{model}.png"
            calibration_plot(os.path.join(output, png_cal), s["calibration"], labels[target])
            lines += _calibration_lines(s["calibration"], png_cal)
        if target == "ln_nu":
            ours["sigma_noise"] = residual_histogram(os.path.join(output, "residuals_ln_nu.png"), s)
            lines += ["![residuals](residuals_ln_nu.png)", ""]
    if "ln_nu/linear" in fits and "dE/linear" in fits:
        ln_nu = np.array(fits["ln_nu/linear"]["y"])
        de = np.array(fits["dE/linear"]["y"])
        comp = compensation_analysis(ln_nu, de, np.array(fits["ln_nu/linear"]["prediction_all_data"]),
                                     np.array(fits["dE/linear"]["prediction_all_data"]))
        compensation_plot(os.path.join(output, "compensation_direct.png"), ln_nu, de, comp["direct"], "direct")
        compensation_plot(os.path.join(output, "compensation_surrogate.png"),
                          fits["ln_nu/linear"]["prediction_all_data"], fits["dE/linear"]["prediction_all_data"],
                          comp["surrogate"], "surrogate")
        ours.update(r_direct=comp["direct"]["r"], r_surrogate=comp["surrogate"]["r"],
                    kappa=comp["kappa"]["mean_kappa_all_pairs"])
        lines += ["## Compensation law (Sec. V)", "", "![direct](compensation_direct.png) "
                  "![surrogate](compensation_surrogate.png)", "",
                  f"Direct fit (Eq. 28): γ = {comp['direct']['fit']['gamma_per_eV']:.4f} /eV, ln(νγ/ν0) = "
                  f"{comp['direct']['fit']['ln_nu_gamma']:.4f}; marginal fit (Eq. 29, 50 bins): γ* = "
                  f"{comp['direct']['marginal']['gamma_star_per_eV']:.4f} /eV. ⟨κ⟩ (Eq. 35, 1/M² Σ_ij) = "
                  f"{comp['kappa']['mean_kappa_all_pairs']:.4f}.", ""]
    if tables:
        lines += table_statistics_lines(table_data)
    else:
        lines += database_statistics_lines(db)
        lines += local_entropy_lines(db, output)
    lines += ["## Side by side with the paper (THEORY §7)", "",
              "RMSEs here are learning-curve test RMSEs at the smallest test fraction (mean over splits).", "",
              "| quantity | this database | paper |", "|---|---|---|"]
    for key, (text, value) in PAPER.items():
        mine = ours.get(key)
        lines.append(f"| {text} | {'—' if mine is None else f'{mine:.3f}'} | {value} |")
    path = os.path.join(output, "report.md")
    with atomic_output(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write("\n".join(lines) + "\n")
    return path


def _fit_diagnostics_lines(s: dict) -> list:
    """Effective parameters, the too-few-rows warning and the EQML second-step diagnostics."""
    out = [f"Effective number of well-determined weights (first step): {s.get('effective_parameters', float('nan')):.1f}."]
    if s.get("rows_below_features"):
        out.append(f"**Warning**: {s['n_samples']} training rows for {s['n_features']} features — the prior, "
                   "not the data, sets most weights.")
    if s.get("per_strain"):
        out.append("One model per strain class (a prediction between classes interpolates linearly in strain); "
                   "effective weights summed over the classes.")
    d = s.get("diagnostics") or {}
    per_class = d.items() if d and "second_step_alpha" not in d else ([("", d)] if d else [])
    for label, c in per_class:
        out.append(f"EQML second step{' at ' + label if label else ''}: noise precision α₂ = "
                   f"{c['second_step_alpha']:.4g}, weight precision λ₂ = {c['second_step_lambda']:.4g}, "
                   f"{c['effective_parameters_second_step']:.1f} effective parameters; max |EQML − linear| on the "
                   f"data = {c['max_abs_eqml_minus_linear']:.4f}.")
    return out + [""]


def _calibration_lines(c: dict, png: str) -> list:
    """Held-out errors at p = 0.1 by strain class and family, coverage, held-out families."""
    cb, cp = c["coverage_bayes"], c["coverage_pops"]
    out = [f"### Held-out errors and calibrated uncertainties (p = {c['test_fraction']}, {c['n_splits']} splits)", "",
           f"Test RMSE {c['test_rmse']:.4f}, MAE {c['test_mae']:.4f}. Fraction of held-out errors within ±1σ / ±2σ "
           f"(a calibrated Gaussian: 0.683 / 0.954): Bayesian {cb['within_1sigma']:.3f} / {cb['within_2sigma']:.3f} "
           f"(mean σ {cb['mean_std']:.4f}); POPS {cp['within_1sigma']:.3f} / {cp['within_2sigma']:.3f} "
           f"(mean σ {cp['mean_std']:.4f}).", "", f"![calibration]({png})", "",
           "| strain (%) | n | test RMSE | test MAE |", "|---|---|---|---|"]
    out += [f"| {k} | {v['n']} | {v['rmse']:.4f} | {v['mae']:.4f} |"
            for k, v in sorted(c["by_strain_percent"].items(), key=lambda kv: int(kv[0]))]
    out += ["", "| family | n | test RMSE | test MAE |", "|---|---|---|---|"]
    out += [f"| {k} | {v['n']} | {v['rmse']:.4f} | {v['mae']:.4f} |" for k, v in sorted(c["by_family"].items())]
    held = c.get("held_out_family") or {}
    if held:
        out += ["", "Held-out family (trained on every other family):", "",
                "| family | n | test RMSE | test MAE | within ±1σ Bayes / POPS | within ±2σ Bayes / POPS |",
                "|---|---|---|---|---|---|"]
        out += [f"| {k} | {v['n']} | {v['test_rmse']:.4f} | {v['test_mae']:.4f} | "
                f"{v['coverage_bayes']['within_1sigma']:.2f} / {v['coverage_pops']['within_1sigma']:.2f} | "
                f"{v['coverage_bayes']['within_2sigma']:.2f} / {v['coverage_pops']['within_2sigma']:.2f} |"
                for k, v in sorted(held.items())]
    return out + [""]


def calibration_plot(path, c: dict, label: str) -> None:
    """Observed fraction of held-out |errors| within z σ against the Gaussian expectation, for
    the Bayesian and the POPS standard deviations (on the diagonal = calibrated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.special import erf

    pts = c["calibration_points"]
    err = np.abs(np.asarray(pts["error"]))
    z = np.linspace(0.0, 3.0, 61)
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot(z, erf(z / np.sqrt(2)), "k--", lw=1, label="calibrated Gaussian")
    for key, name in (("std_bayes", "Bayesian"), ("std_pops", "POPS")):
        std = np.asarray(pts[key])
        ax.plot(z, [(err <= zi * std).mean() for zi in z], lw=1.5, label=name)
    ax.set_xlabel("z (multiples of the predicted σ)")
    ax.set_ylabel(f"fraction of held-out |errors| ≤ zσ — {label}")
    ax.set_ylim(0, 1.02)
    ax.legend(frameon=False, loc="lower right")
    _savefig(fig, path)


def local_entropy_slice(path, atoms, ds: np.ndarray, title: str, thickness: float = 1.5,
                        centre: np.ndarray | None = None) -> dict:
    """Picture of the local formation entropies ΔS_i (k_B): the atoms within ``thickness`` (Å)
    of the (001) plane through ``centre`` (default: the atom of largest |ΔS_i|), coloured by
    ΔS_i on a symmetric-logarithmic scale (the defect core and the slowly decaying far field on
    one picture). Returns the slice's numbers (atoms shown, their ΔS range, the cell's sum)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    from hpcvib.geometry.structures import minimum_image

    ds = np.asarray(ds, dtype=float)
    centre = atoms.positions[int(np.argmax(np.abs(ds)))] if centre is None else np.asarray(centre, dtype=float)
    rel = minimum_image(atoms.positions - centre, atoms.get_cell())
    shown = np.abs(rel[:, 2]) <= thickness
    vmax = float(np.abs(ds).max()) or 1.0
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    order = np.argsort(np.abs(ds[shown]))
    art = ax.scatter(rel[shown, 0][order], rel[shown, 1][order], c=ds[shown][order], s=18, cmap="RdBu_r",
                     norm=SymLogNorm(linthresh=1e-3, vmin=-vmax, vmax=vmax), edgecolors="none")
    fig.colorbar(art, ax=ax, label="ΔS_i (k_B)")
    ax.set_aspect("equal")
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_title(f"{title}\nΣ ΔS_i = {ds.sum():.3f} k_B; slice |z| ≤ {thickness:g} Å", fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return {"atoms_shown": int(shown.sum()), "dS_min_kB": float(ds[shown].min()), "dS_max_kB": float(ds[shown].max()),
            "sum_dS_kB": float(ds.sum())}


def local_entropy_lines(db, output: str, max_pictures: int = 3) -> list:
    """Report section on the stored per-atom ΔS_i (job ``[thermo] local``): one slice picture for
    the unstrained configuration of largest S_f in each of up to ``max_pictures`` families."""
    from hpcvib.database import atoms_from_record

    best: dict = {}
    for key, st in sorted(db.read("configs").items()):
        th = st.get("thermo")
        if th is None or not th.ok or "dS_local" not in th.data or abs(float(th.attrs.get("strain", 0.0))) > 1e-9:
            continue
        family = family_label(st.get("generate"))
        if family not in best or th.attrs["S_f_kB"] > best[family][1]:
            best[family] = (key, float(th.attrs["S_f_kB"]))
    if not best:
        return []
    lines = ["## Local formation entropies ΔS_i (Eq. 7–10)", "",
             "Exact per-atom shares of S_f (they sum to it, Eq. 20); slices through the atom of largest |ΔS_i|.", ""]
    for family, (key, s_f) in sorted(best.items())[:max_pictures]:
        rel = db.read_record("configs", key, "relax")
        th = db.read_record("configs", key, "thermo")
        png = f"local_{family}.png".replace("/", "_")
        info = local_entropy_slice(os.path.join(output, png), atoms_from_record(rel), th.data["dS_local"],
                                   f"{key}: S_f = {s_f:.3f} k_B")
        lines += [f"{key}: ΔS_i in the slice {info['dS_min_kB']:.4f} … {info['dS_max_kB']:.4f} k_B.", "",
                  f"![{key}]({png})", ""]
    return lines


def database_statistics_lines(db) -> list:
    """E_f and S_f ranges per family (and counts per strain) of a database's configurations."""
    rows = {}
    for key, st in db.read("configs", with_data=False).items():
        th, gen = st.get("thermo"), st.get("generate")
        if th is None or not th.ok or "S_f_kB" not in th.attrs:
            continue
        family = family_label(gen)
        rows.setdefault(family, []).append((th.attrs.get("E_f_eV", np.nan), th.attrs["S_f_kB"],
                                            key.split("@")[0], float(th.attrs.get("strain", 0.0))))
    return _statistics_lines(rows)


def table_statistics_lines(data: dict) -> list:
    """:func:`database_statistics_lines` of a training-table dataset (merged tables: a minimum
    is its key before '@', so two tables' minima of one key count twice only when prefixed)."""
    rows = {}
    for key, family, e_f, s_f, strain in zip(data["keys"], data["kinds"], data["E_f"], data["y"], data["strains"]):
        rows.setdefault(family, []).append((float(e_f), float(s_f), key.split("@")[0], float(strain)))
    return _statistics_lines(rows)


def _statistics_lines(rows: dict) -> list:
    """The statistics table of {family: [(E_f, S_f, minimum key, strain), ...]}."""
    if not rows:
        return []
    out = ["## Database statistics", "", "| family | distinct minima | configurations | E_f range (eV) | "
           "S_f range (k_B) |", "|---|---|---|---|---|"]
    total_min = total = 0
    for family, v in sorted(rows.items(), key=lambda kv: family_sort_key(kv[0])):
        e = np.array([r[0] for r in v])
        sf = np.array([r[1] for r in v])
        minima = len({r[2] for r in v})
        total_min += minima
        total += len(v)
        out.append(f"| {family} | {minima} | {len(v)} | {np.nanmin(e):.3f} … {np.nanmax(e):.3f} | "
                   f"{sf.min():.3f} … {sf.max():.3f} |")
    out.append(f"| all | {total_min} | {total} | | |")
    return out + [""]


def results_table(db, fit_dir: str | None = None) -> str:
    """Short table of a database's exact results (and the surrogate errors when fitted): counts,
    E_f and exact S_f ranges per defect family (minima only), the events' ΔE and ln ν* ranges
    and their correlation (Eq. 31), RMSEs from ``fit.json``."""
    rows = {}
    for key, st in db.read("configs", with_data=False).items():
        th, gen = st.get("thermo"), st.get("generate")
        if th is None or not th.ok or gen is None:
            continue
        fam = family_label(gen)
        rows.setdefault(fam, []).append((th.attrs["E_f_eV"], th.attrs["S_f_kB"]))
    events = [st["event"] for st in db.read("events", with_data=False).values() if "event" in st and st["event"].ok]
    event_lines = []
    if events:
        de = np.array([e.attrs["delta_E_eV"] for e in events])
        ln_nu = np.array([e.attrs["ln_nu_THz"] for e in events])
        from hpcvib.physics.compensation import pearson_r

        event_lines.append(f"events: {len(events)} distinct connected saddles, ΔE {de.min():.3f} .. {de.max():.3f} eV, "
                           f"ln(ν*/THz) {ln_nu.min():.3f} .. {ln_nu.max():.3f}"
                           + (f", r(ln ν, ΔE) = {pearson_r(ln_nu, de):.3f}" if len(events) > 2 else ""))
    lines = []
    if rows:
        lines.append(f"{'family':<7} {'minima':>6}  {'E_f range (eV)':>17}  {'exact S_f range (k_B)':>22}")
        allv = []
        for fam in sorted(rows, key=family_sort_key):
            v = np.array(rows[fam])
            allv.append(v)
            lines.append(f"{fam:<7} {len(v):>6}  {v[:, 0].min():7.3f} .. {v[:, 0].max():6.3f}  "
                         f"{v[:, 1].min():9.3f} .. {v[:, 1].max():8.3f}")
        v = np.vstack(allv)
        lines.append(f"{'all':<7} {len(v):>6}  {v[:, 0].min():7.3f} .. {v[:, 0].max():6.3f}  "
                     f"{v[:, 1].min():9.3f} .. {v[:, 1].max():8.3f}")
    elif not event_lines:
        return "no exact formation entropies or events in the database yet"
    lines += event_lines
    fit_path = os.path.join(fit_dir, "fit.json") if fit_dir else None
    if fit_path and os.path.exists(fit_path):
        with open(fit_path) as fh:
            fits = json.load(fh)
        for key, s in fits.items():
            c = s["learning_curve"][0]
            lines.append(f"surrogate {key}: {s['n_features']} features, test RMSE {c['test_rmse']:.3f} ± "
                         f"{c['test_rmse_std']:.3f} (p = {c['test_fraction']:.1f}, {c['n_splits']} splits), "
                         f"fit on all {s['n_samples']}: RMSE {s['fit_rmse']:.3f}")
    return "\n".join(lines)
