"""Compensation-law statistics of activated events (paper Sec. V, THEORY §6).

All functions take plain arrays: ΔE (eV) and ln(ν/ν0) with ν0 = 1 THz.

* :func:`pearson_r` — Eq. 31;
* :func:`direct_fit` — the direct (DCAEE) law ln(ν/ν0) = γ ΔE + ln(νγ/ν0), Eq. 28, least squares;
* :func:`marginal_law` — Eq. 29 on uniform ΔE bins: bin means E[ln ν|ΔE] with their standard
  errors, bin variances V[ln ν|ΔE] with theirs (σ[V] = V √(2/(n−1)) for normal noise), and the
  weighted fit of the bin means (γ*, ln(νγ*/ν0));
* :func:`mean_kappa` — κ_ij (Eq. 34) and ⟨κ⟩ (Eq. 35). With a_i = w1·(D_m ⊕ D_s)_i (the event
  model's ln ν̂_i) and e_i = ΔE_i − ΔE0, ΔE0 = −ln(νγ/ν0)/γ, Eq. 34 is
  κ_ij = |a_i e_j − e_i a_j| / (|e_j| |a_i + a_j|): only the M scalars a_i, e_i are needed, and the
  M² pairs are summed in row blocks (O(block·M) memory);
* :func:`stochastic_law` — Eq. 36: the direct law plus normal noise of the bin standard deviation.
"""

from __future__ import annotations

import numpy as np

from hpcvib.errors import InputError


def pearson_r(ln_nu, delta_e) -> float:
    """Eq. 31: C[ln ν, ΔE] / sqrt(V[ln ν] V[ΔE])."""
    x = np.asarray(delta_e, dtype=float)
    y = np.asarray(ln_nu, dtype=float)
    if len(x) != len(y) or len(x) < 2:
        raise InputError("pearson_r needs two arrays of the same length >= 2")
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc * yc).sum() / np.sqrt((xc ** 2).sum() * (yc ** 2).sum()))


def direct_fit(ln_nu, delta_e) -> dict:
    """Eq. 28 by least squares: γ (1/eV), ln(νγ/ν0), ΔE0 = −ln(νγ/ν0)/γ (eV), residual std."""
    x = np.asarray(delta_e, dtype=float)
    y = np.asarray(ln_nu, dtype=float)
    A = np.vstack([x, np.ones_like(x)]).T
    (gamma, c), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - (gamma * x + c)
    return {"gamma_per_eV": float(gamma), "ln_nu_gamma": float(c),
            "delta_E0_eV": float(-c / gamma) if gamma != 0 else float("nan"),
            "residual_std": float(resid.std(ddof=2)) if len(x) > 2 else 0.0}


def marginal_law(ln_nu, delta_e, n_bins: int = 50, min_count: int = 2) -> dict:
    """Eq. 29 on ``n_bins`` uniform bins of [min ΔE, max ΔE] (the last bin closed).

    Returns edges, centres, counts, bin means and their standard errors, bin variances (ddof 1)
    and their standard deviations, and the fit of the bin means weighted by 1/σ² (bins with
    fewer than ``min_count`` events are left out: NaN)."""
    x = np.asarray(delta_e, dtype=float)
    y = np.asarray(ln_nu, dtype=float)
    edges = np.linspace(x.min(), x.max(), n_bins + 1)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sums = np.bincount(idx, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
        sq = np.bincount(idx, weights=(y - means[idx]) ** 2, minlength=n_bins)
        var = sq / (counts - 1)
        ok = counts >= min_count
        means = np.where(counts > 0, means, np.nan)
        var = np.where(ok, var, np.nan)
        sem = np.sqrt(var / counts)
        var_std = var * np.sqrt(2.0 / (counts - 1))
    centres = 0.5 * (edges[1:] + edges[:-1])
    fit = {"gamma_star_per_eV": float("nan"), "ln_nu_gamma_star": float("nan")}
    good = ok & (sem > 0)
    if good.sum() >= 2:
        w = 1.0 / sem[good]
        A = np.vstack([centres[good], np.ones(good.sum())]).T * w[:, None]
        (g, c), *_ = np.linalg.lstsq(A, means[good] * w, rcond=None)
        fit = {"gamma_star_per_eV": float(g), "ln_nu_gamma_star": float(c)}
    return {"edges": edges, "centres": centres, "counts": counts, "mean": means, "mean_sem": sem,
            "variance": var, "variance_std": var_std, "bin_width_eV": float(edges[1] - edges[0]), **fit}


def kappa_pairs(a_i, e_i, a_j, e_j) -> np.ndarray:
    """κ for all (i, j) of two blocks: |a_i e_j − e_i a_j| / (|e_j| |a_i + a_j|) (Eq. 34)."""
    num = np.abs(np.outer(a_i, e_j) - np.outer(e_i, a_j))
    den = np.abs(e_j)[None, :] * np.abs(a_i[:, None] + a_j[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return num / den


def mean_kappa(predicted_ln_nu, delta_e, delta_e0: float, block: int = 2048) -> dict:
    """⟨κ⟩ (Eq. 35) over all M² ordered pairs (the paper's 1/M² Σ_ij, diagonal κ_ii = 0 included)
    and over the M(M−1) pairs i ≠ j; pairs with a zero denominator are counted and left out."""
    a = np.asarray(predicted_ln_nu, dtype=float)
    e = np.asarray(delta_e, dtype=float) - delta_e0
    m = len(a)
    total = 0.0
    undefined = 0
    for start in range(0, m, block):
        k = kappa_pairs(a[start:start + block], e[start:start + block], a, e)
        bad = ~np.isfinite(k)
        undefined += int(bad.sum())
        total += float(k[~bad].sum())
    n_all = m * m - undefined
    n_off = m * (m - 1) - undefined  # κ_ii = 0 is always defined when its denominator is not zero
    return {"mean_kappa_all_pairs": total / n_all if n_all else float("nan"),
            "mean_kappa_distinct_pairs": total / n_off if n_off > 0 else float("nan"),
            "pairs": m * m, "undefined_pairs": undefined, "delta_E0_eV": float(delta_e0)}


def stochastic_law(delta_e, fit: dict, marginal: dict, rng=None) -> np.ndarray:
    """Samples of Eq. 36: γ ΔE + ln(νγ/ν0) + N(0, V[ln ν|ΔE]) with V of the ΔE bin."""
    rng = rng or np.random.default_rng(0)
    x = np.asarray(delta_e, dtype=float)
    edges = marginal["edges"]
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    var = np.nan_to_num(marginal["variance"][idx], nan=np.nanmean(marginal["variance"]))
    return fit["gamma_per_eV"] * x + fit["ln_nu_gamma"] + rng.normal(size=len(x)) * np.sqrt(var)


def compensation_analysis(ln_nu, delta_e, predicted_ln_nu=None, predicted_delta_e=None, n_bins: int = 50) -> dict:
    """Everything of Sec. V for direct data and, when given, for surrogate predictions."""
    out = {"direct": {"r": pearson_r(ln_nu, delta_e), "fit": direct_fit(ln_nu, delta_e),
                      "marginal": marginal_law(ln_nu, delta_e, n_bins)}}
    if predicted_ln_nu is not None:
        e_hat = delta_e if predicted_delta_e is None else predicted_delta_e
        out["surrogate"] = {"r": pearson_r(predicted_ln_nu, e_hat), "fit": direct_fit(predicted_ln_nu, e_hat),
                            "marginal": marginal_law(predicted_ln_nu, e_hat, n_bins)}
        out["kappa"] = mean_kappa(predicted_ln_nu, delta_e, out["direct"]["fit"]["delta_E0_eV"])
    return out
