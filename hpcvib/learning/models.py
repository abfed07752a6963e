"""Surrogate models on descriptor sums (paper Sec. III–IV, THEORY §6), scikit-learn compatible.

* :class:`BayesianLinearModel` — y = w·x (+ b): Bayesian ridge (evidence-maximised α, λ via
  scikit-learn) with *our own* predictive standard deviation, exact for a flat prior on the
  intercept: σ²(x) = 1/α + (x − x̄)ᵀ Σ (x − x̄) + 1/(α n) (scikit-learn's ``return_std`` leaves
  out the centring and the intercept's variance). Used for S_f = w·ΔD (Eq. 14) and the event
  models ln(ν*/ν0) = w1·(D_m ⊕ D_s) (Eq. 27), ΔE = w2·(D_m ⊕ D_s) (Eq. 30).
* :class:`EQMLModel` — S_f = w·ΔD + Tr(W ΔDD) (Eq. 17) fitted in two steps: Bayesian ridge on
  ΔD, then Bayesian ridge of the residual on the K(K+1)/2 upper-triangle entries of ΔDD
  (off-diagonal entries doubled, so that the trace is a dot product); 35 + 630 = 665 weights at
  jmax = 4. ΔD and ΔDD are correlated, so the first step's w absorbs part of the quadratic law
  and a residual fit on ΔDD alone cannot undo it: by default (``refit_linear=True``) the second
  step fits the residual on ΔD ⊕ q(ΔDD) and w is the sum of both steps' linear weights — still
  665 weights, and a known quadratic law is recovered exactly. ``refit_linear=False`` is the
  paper's literal second step.

Features are scaled column-wise by their root mean square before the fit (the bispectrum
components span orders of magnitude; one ridge prior per model needs comparable columns); the
returned ``coef_`` are in the original units.
"""

from __future__ import annotations

import json
import os

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from hpcvib.errors import InputError


# ------------------------------------------------------------------------------- features
def quadratic_features(dDD: np.ndarray) -> np.ndarray:
    """(n, K, K) symmetric ΔDD → (n, K(K+1)/2) with off-diagonal entries doubled:
    Tr(W ΔDD) = Σ_{a≤b} W_ab q_ab for symmetric W."""
    dDD = np.asarray(dDD, dtype=float)
    k = dDD.shape[-1]
    iu, ju = np.triu_indices(k)
    factor = np.where(iu == ju, 1.0, 2.0)
    return dDD[..., iu, ju] * factor


def entropy_features(dD: np.ndarray, dDD: np.ndarray | None = None) -> np.ndarray:
    """Design matrix for S_f: ΔD (linear model) or ΔD ⊕ q(ΔDD) (EQML)."""
    dD = np.atleast_2d(np.asarray(dD, dtype=float))
    if dDD is None:
        return dD
    return np.hstack([dD, quadratic_features(np.asarray(dDD).reshape(len(dD), dD.shape[1], dD.shape[1]))])


def event_features(D_min: np.ndarray, D_saddle: np.ndarray) -> np.ndarray:
    """D_m ⊕ D_s (Eq. 27, 30): (n, 2K)."""
    return np.hstack([np.atleast_2d(D_min), np.atleast_2d(D_saddle)])


def n_linear_from_width(width: int) -> int:
    """K such that K + K(K+1)/2 = width (EQML design-matrix width)."""
    k = int(round((-3 + np.sqrt(9 + 8 * width)) / 2))
    if k + k * (k + 1) // 2 != width:
        raise InputError(f"EQML design matrix has {width} columns, not K + K(K+1)/2 for any K")
    return k


# ------------------------------------------------------------------------------- estimators
#: Gamma hyper-priors of the noise (α) and weight (λ) precisions, as scikit-learn's BayesianRidge
GAMMA_PRIOR = 1e-6


def evidence_maximisation(X, y, eig, vec, b_eigen, max_iter: int = 300, tol: float = 1e-6):
    """(α, λ, w): MacKay's fixed-point evidence maximisation of Bayesian ridge regression
    y = X w + ε, ε ~ N(0, 1/α), w ~ N(0, 1/λ) — the algorithm, priors, start and stopping rule
    of scikit-learn's ``BayesianRidge`` (which it reproduces to round-off, tested), but in the
    eigenbasis of the Gram matrix XᵀX = V diag(e) Vᵀ (``eig``, ``vec``; ``b_eigen`` = Vᵀ Xᵀ y)
    instead of an SVD of X: O(p³) per fit after forming XᵀX, so learning curves of the 665-feature
    EQML model on ~20 000 configurations cost seconds instead of minutes."""
    n = len(y)
    alpha = 1.0 / (np.var(y) + np.finfo(float).eps)
    lam = 1.0
    w_old = None

    def weights(alpha, lam):
        return vec @ (b_eigen / (eig + lam / alpha))

    for iteration in range(max_iter):
        w = weights(alpha, lam)
        residual = float(np.sum((y - X @ w) ** 2))
        gamma = float(np.sum(alpha * eig / (lam + alpha * eig)))
        lam = (gamma + 2 * GAMMA_PRIOR) / (float(np.sum(w ** 2)) + 2 * GAMMA_PRIOR)
        alpha = (n - gamma + 2 * GAMMA_PRIOR) / (residual + 2 * GAMMA_PRIOR)
        if w_old is not None and np.sum(np.abs(w_old - w)) < tol:
            break
        w_old = w
    return float(alpha), float(lam), weights(alpha, lam)

#: predictive uncertainties a fitted model can give: the Bayesian posterior (noise + weights)
#: and POPS (Swinburne & Perez, Mach. Learn.: Sci. Technol. 6, 2025: misspecification +
#: epistemic weight covariance, no noise term — the targets are deterministic)
UNCERTAINTIES = ("bayes", "pops")


class BayesianLinearModel(RegressorMixin, BaseEstimator):
    """Bayesian ridge y = w·x (+ b) with correct predictive standard deviations.

    ``pops=True`` also estimates the misspecification covariance of the weights by POPS
    (pointwise optimal parameter sets; the ``popsregression`` package of the method's authors,
    hypercube posterior, on the same scaled design), so ``predict(..., uncertainty="pops")``
    gives standard deviations that do not shrink to zero for a misspecified model of
    near-deterministic data."""

    def __init__(self, fit_intercept: bool = False, scale: bool = True, max_iter: int = 300, tol: float = 1e-6,
                 pops: bool = False):
        self.fit_intercept = fit_intercept
        self.scale = scale
        self.max_iter = max_iter
        self.tol = tol
        self.pops = pops

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float).ravel()
        if X.ndim != 2 or len(X) != len(y):
            raise InputError(f"X must be (n, p) and y (n,), got {X.shape} and {y.shape}")
        if len(y) < 2:
            raise InputError("at least two samples are needed to fit")
        rms = np.sqrt((X ** 2).mean(axis=0)) if self.scale else np.ones(X.shape[1])
        rms[rms == 0] = 1.0
        self.scale_ = rms
        Xs = X / rms
        self.x_mean_ = X.mean(axis=0) if self.fit_intercept else np.zeros(X.shape[1])
        y_mean = y.mean() if self.fit_intercept else 0.0
        Xc = Xs - Xs.mean(axis=0) if self.fit_intercept else Xs
        yc = y - y_mean
        gram = Xc.T @ Xc
        eig, vec = np.linalg.eigh(gram)
        eig = np.clip(eig, 0.0, None)
        self.alpha_, self.lambda_, w_scaled = evidence_maximisation(Xc, yc, eig, vec, vec.T @ (Xc.T @ yc),
                                                                    self.max_iter, self.tol)
        self.coef_ = w_scaled / rms
        self.intercept_ = float(y_mean - self.x_mean_ @ self.coef_) if self.fit_intercept else 0.0
        # posterior covariance of the weights in original units (Σ = (α XcᵀXc + λ I)⁻¹ on scaled X)
        sigma = (vec / (self.alpha_ * eig + self.lambda_)) @ vec.T
        self.sigma_ = sigma / np.outer(rms, rms)
        self.n_samples_ = len(y)
        self.n_features_in_ = X.shape[1]
        # effective number of well-determined parameters (MacKay): Σ α e_i / (λ + α e_i)
        self.effective_parameters_ = float(np.sum(self.alpha_ * eig / (self.lambda_ + self.alpha_ * eig)))
        self.pops_sigma_ = self._pops_covariance(Xc, yc, rms) if self.pops else np.zeros((0, 0))
        return self

    def _pops_covariance(self, Xc, yc, rms) -> np.ndarray:
        """Misspecification covariance of the weights (original units) by POPS."""
        from popsregression import POPSRegression

        pops = POPSRegression(fit_intercept=False, max_iter=self.max_iter, tol=self.tol, posterior="hypercube",
                              resampling_method="sobol")
        pops.fit(Xc, yc)
        return np.asarray(pops.misspecification_sigma_) / np.outer(rms, rms)

    def predict(self, X, return_std: bool = False, uncertainty: str = "bayes"):
        """Mean and, with ``return_std``, the predictive standard deviation: ``"bayes"`` = noise
        1/α + weight posterior; ``"pops"`` = POPS misspecification + weight posterior."""
        X = np.asarray(X, dtype=float)
        X = X.reshape(1, -1) if X.ndim == 1 else X
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"model expects {self.n_features_in_} features, got {X.shape[1]}")
        mean = X @ self.coef_ + self.intercept_
        if not return_std:
            return mean
        Xc = X - self.x_mean_
        weights = np.einsum("ij,jk,ik->i", Xc, self.sigma_, Xc)
        if uncertainty == "pops":
            if not self.pops_sigma_.size:
                raise InputError("this model was fitted without POPS uncertainties (refit with pops=True)")
            return mean, np.sqrt(weights + np.einsum("ij,jk,ik->i", Xc, self.pops_sigma_, Xc))
        if uncertainty != "bayes":
            raise InputError(f"unknown uncertainty {uncertainty!r} (use {', '.join(UNCERTAINTIES)})")
        var = 1.0 / self.alpha_ + weights
        if self.fit_intercept:
            var += 1.0 / (self.alpha_ * self.n_samples_)
        return mean, np.sqrt(var)

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> dict:
        return {"class": "BayesianLinearModel", "params": self.get_params(),
                "arrays": {k: np.asarray(getattr(self, k)) for k in ("coef_", "sigma_", "x_mean_", "scale_",
                                                                     "pops_sigma_")},
                "scalars": {k: getattr(self, k) for k in ("alpha_", "lambda_", "intercept_", "n_samples_",
                                                          "n_features_in_", "effective_parameters_")}}

    @classmethod
    def from_state(cls, state: dict):
        m = cls(**state["params"])
        m.pops_sigma_ = np.zeros((0, 0))  # files written before POPS existed
        m.effective_parameters_ = float("nan")
        for k, v in state["arrays"].items():
            setattr(m, k, np.asarray(v))
        for k, v in state["scalars"].items():
            setattr(m, k, v)
        if m.pops_sigma_.size == 0:
            m.pops_sigma_ = np.zeros((0, 0))
        return m


class EQMLModel(RegressorMixin, BaseEstimator):
    """Eq. 17 in two steps on X = ΔD ⊕ q(ΔDD) (see :func:`entropy_features`)."""

    def __init__(self, fit_intercept: bool = False, scale: bool = True, refit_linear: bool = True,
                 pops: bool = False):
        self.fit_intercept = fit_intercept
        self.scale = scale
        self.refit_linear = refit_linear
        self.pops = pops

    def _second(self, X):
        return X if self.refit_linear else X[:, self.n_linear_:]

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float).ravel()
        k = n_linear_from_width(X.shape[1])
        self.n_linear_ = k
        self.linear_ = BayesianLinearModel(self.fit_intercept, self.scale).fit(X[:, :k], y)
        residual = y - self.linear_.predict(X[:, :k])
        self.quadratic_ = BayesianLinearModel(False, self.scale, pops=self.pops).fit(self._second(X), residual)
        self.n_features_in_ = X.shape[1]
        return self

    def diagnostics(self, X) -> dict:
        """What tells whether the quadratic step did anything (issue: EQML = linear when the
        evidence switches it off): its noise and weight precisions, effective parameters, and
        the largest |EQML − linear| prediction difference on ``X``."""
        k = self.n_linear_
        diff = self.predict(X) - self.linear_.predict(X[:, :k])
        return {"second_step_alpha": self.quadratic_.alpha_, "second_step_lambda": self.quadratic_.lambda_,
                "effective_parameters_linear": self.linear_.effective_parameters_,
                "effective_parameters_second_step": self.quadratic_.effective_parameters_,
                "max_abs_eqml_minus_linear": float(np.abs(diff).max())}

    @property
    def coef_(self) -> np.ndarray:
        """(w, upper triangle of W with off-diagonal entries for the doubled features): 665."""
        k = self.n_linear_
        q = self.quadratic_.coef_
        if self.refit_linear:
            return np.concatenate([self.linear_.coef_ + q[:k], q[k:]])
        return np.concatenate([self.linear_.coef_, q])

    def predict(self, X, return_std: bool = False, uncertainty: str = "bayes"):
        X = np.asarray(X, dtype=float)
        X = X.reshape(1, -1) if X.ndim == 1 else X
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"model expects {self.n_features_in_} features, got {X.shape[1]}")
        k = self.n_linear_
        if not return_std:
            return self.linear_.predict(X[:, :k]) + self.quadratic_.predict(self._second(X))
        m1, s1 = self.linear_.predict(X[:, :k], return_std=True)
        m2, s2 = self.quadratic_.predict(self._second(X), return_std=True, uncertainty=uncertainty)
        # noise (Bayes) or misspecification (POPS): the second step's, which models the first
        # step's residual; weight uncertainties of the two steps added as independent
        var = s2 ** 2 + (s1 ** 2 - 1.0 / self.linear_.alpha_)
        return m1 + m2, np.sqrt(var)

    def state(self) -> dict:
        return {"class": "EQMLModel", "params": self.get_params(), "n_linear_": self.n_linear_,
                "n_features_in_": self.n_features_in_,
                "linear_": self.linear_.state(), "quadratic_": self.quadratic_.state()}

    @classmethod
    def from_state(cls, state: dict):
        m = cls(**state["params"])
        m.n_linear_ = int(state["n_linear_"])
        m.n_features_in_ = int(state["n_features_in_"])
        m.linear_ = BayesianLinearModel.from_state(state["linear_"])
        m.quadratic_ = BayesianLinearModel.from_state(state["quadratic_"])
        return m


#: strains (fractional) closer than this are one strain class
STRAIN_CLASS_RESOLUTION = 1e-4
#: how far (fractional strain) a prediction may lie outside the outermost trained strain class
STRAIN_EXTRAPOLATION = 0.0025


def isotropic_strain(volume_per_atom: float, volume_per_atom0: float) -> float:
    """ε = (Ω/Ω0)^(1/3) − 1: the isotropic strain of a host whose volume per lattice site is Ω
    (Å³) against the unstrained Ω0 (for bcc, Ω0 = a0³/2)."""
    return float((volume_per_atom / volume_per_atom0) ** (1.0 / 3.0) - 1.0)


class StrainClassModel(RegressorMixin, BaseEstimator):
    """One model of kind ``base`` per strain class of the training data (the paper's database
    has five: −1, 0, 1, 2, 3 %), for a potential whose perfect-crystal spectrum changes with
    strain in a way one set of weights cannot follow (Fe_mm: ln det' of the perfect cell is not
    monotonic in strain).

    The last column of ``X`` is the strain ε of each row (:func:`isotropic_strain`); the other
    columns are the base model's features. A row whose strain falls between two trained classes
    is predicted by linear interpolation in ε of the two class models (mean and standard
    deviation); beyond the outermost fitted class it takes that class's model (a class with
    fewer than two training rows — possible in a learning-curve split — is served by its fitted
    neighbours). :meth:`check_strain` refuses a new cell farther than :data:`STRAIN_EXTRAPOLATION`
    outside the training data's strains.

    Parameters
    ----------
    base : str
        Model of each class: ``"linear"`` or ``"eqml"``.
    target : str
        Target name (:data:`TARGETS`).
    pops : bool
        Fit POPS misspecification uncertainties in every class.
    volume_per_atom0 : float
        Ω0, Å³ per lattice site of the unstrained host, stored so that a prediction can state
        the strain of a new cell.
    """

    def __init__(self, base: str = "linear", target: str = "S_f", pops: bool = False,
                 volume_per_atom0: float = 0.0):
        self.base = base
        self.target = target
        self.pops = pops
        self.volume_per_atom0 = volume_per_atom0

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float).ravel()
        classes = np.round(X[:, -1] / STRAIN_CLASS_RESOLUTION) * STRAIN_CLASS_RESOLUTION
        strains, models = [], []
        for value in np.unique(classes):
            sel = classes == value
            if sel.sum() < 2:
                continue
            strains.append(float(value))
            models.append(make_model(self.base, self.target, self.pops).fit(X[sel, :-1], y[sel]))
        if not models:
            raise InputError("no strain class has two training rows")
        self.strain_range_ = (float(classes.min()), float(classes.max()))
        self.strains_ = np.array(strains)
        self.models_ = models
        self.n_features_in_ = X.shape[1]
        self.effective_parameters_ = float(sum(effective_parameters(m) for m in models))
        return self

    def check_strain(self, strain: float, source: str) -> None:
        """Refuse a strain farther than :data:`STRAIN_EXTRAPOLATION` outside the training data."""
        lo, hi = self.strain_range_
        if not lo - STRAIN_EXTRAPOLATION - STRAIN_CLASS_RESOLUTION <= strain \
                <= hi + STRAIN_EXTRAPOLATION + STRAIN_CLASS_RESOLUTION:
            raise InputError(f"{source}: strain {100 * strain:+.3f} % is outside the model's strain classes "
                             f"({100 * lo:+.2f} … {100 * hi:+.2f} %)")

    def class_weights(self, strain) -> np.ndarray:
        """(n, n_classes) interpolation weights of each class model for strains ``strain``
        (fractional), clamped to the outermost fitted classes."""
        strain = np.atleast_1d(np.asarray(strain, dtype=float))
        s = self.strains_
        clipped = np.clip(strain, s[0], s[-1])
        w = np.zeros((len(strain), len(s)))
        for i, e in enumerate(clipped):
            j = int(np.searchsorted(s, e))
            if j == 0 or abs(s[min(j, len(s) - 1)] - e) <= STRAIN_CLASS_RESOLUTION:
                w[i, min(j, len(s) - 1)] = 1.0
                continue
            t = (e - s[j - 1]) / (s[j] - s[j - 1])
            w[i, j - 1], w[i, j] = 1.0 - t, t
        return w

    def predict(self, X, return_std: bool = False, uncertainty: str = "bayes"):
        X = np.asarray(X, dtype=float)
        X = X.reshape(1, -1) if X.ndim == 1 else X
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"model expects {self.n_features_in_} features (the last one the strain), "
                             f"got {X.shape[1]}")
        w = self.class_weights(X[:, -1])
        means, stds = np.zeros_like(w), np.zeros_like(w)
        for c, model in enumerate(self.models_):
            rows = w[:, c] > 0
            if not rows.any():
                continue
            if return_std:
                means[rows, c], stds[rows, c] = model.predict(X[rows, :-1], return_std=True, uncertainty=uncertainty)
            else:
                means[rows, c] = model.predict(X[rows, :-1])
        mean = (w * means).sum(axis=1)
        return (mean, (w * stds).sum(axis=1)) if return_std else mean

    def coef_at(self, strain: float) -> np.ndarray:
        """Weights of the (interpolated) class model at ``strain``."""
        w = self.class_weights([strain])[0]
        return sum(wc * m.coef_ for wc, m in zip(w, self.models_) if wc > 0)

    def diagnostics(self, X) -> dict:
        """The base models' diagnostics per strain class (EQML only)."""
        classes = np.round(X[:, -1] / STRAIN_CLASS_RESOLUTION) * STRAIN_CLASS_RESOLUTION
        return {f"{100 * s:+.2f}%": m.diagnostics(X[np.isclose(classes, s), :-1])
                for s, m in zip(self.strains_, self.models_) if hasattr(m, "diagnostics")}

    def state(self) -> dict:
        return {"class": "StrainClassModel", "params": self.get_params(), "strains_": self.strains_.tolist(),
                "strain_range_": list(self.strain_range_),
                "n_features_in_": self.n_features_in_, "models_": [m.state() for m in self.models_]}

    @classmethod
    def from_state(cls, state: dict):
        m = cls(**state["params"])
        m.strains_ = np.asarray(state["strains_"], dtype=float)
        m.strain_range_ = tuple(float(v) for v in state["strain_range_"])
        m.n_features_in_ = int(state["n_features_in_"])
        m.models_ = [model_from_state(s) for s in state["models_"]]
        m.effective_parameters_ = float(sum(effective_parameters(x) for x in m.models_))
        return m


def effective_parameters(model) -> float:
    """MacKay's number of well-determined parameters of a fitted model (EQML: its first step)."""
    if hasattr(model, "linear_"):
        return model.linear_.effective_parameters_
    return model.effective_parameters_


def model_from_state(state: dict):
    """A fitted estimator from its :meth:`state` dictionary."""
    classes = {"BayesianLinearModel": BayesianLinearModel, "EQMLModel": EQMLModel,
               "StrainClassModel": StrainClassModel}
    if state.get("class") not in classes:
        raise InputError(f"unknown model class {state.get('class')!r}")
    return classes[state["class"]].from_state(state)


MODELS = {"linear": BayesianLinearModel, "eqml": EQMLModel}
TARGETS = {"S_f": "formation entropy S_f (k_B)", "ln_nu": "ln(ν*/1 THz)", "dE": "barrier ΔE (eV)"}


def make_model(name: str, target: str, pops: bool = False, per_strain: bool = False,
               volume_per_atom0: float = 0.0):
    """A fresh estimator ``name`` for ``target``; with ``per_strain``, one per strain class
    (:class:`StrainClassModel`, the design matrix's last column is the strain)."""
    if per_strain:
        make_model(name, target)  # validates the names
        if not volume_per_atom0 > 0:
            raise InputError("per-strain models need the unstrained volume per atom of the host (a lattice)")
        return StrainClassModel(name, target, pops, volume_per_atom0)
    if name not in MODELS:
        raise InputError(f"unknown model {name!r} (use {', '.join(MODELS)})")
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r} (use {', '.join(TARGETS)})")
    if target != "S_f" and name == "eqml":
        raise InputError("EQML is a formation-entropy model; event targets use --model linear (Eq. 27, 30)")
    return MODELS[name](pops=pops)


# ------------------------------------------------------------------------------- errors
def rmse(y, yhat) -> float:
    """Eq. 21 (NaN for no samples)."""
    err = np.asarray(y) - np.asarray(yhat)
    return float(np.sqrt(np.mean(err ** 2))) if err.size else float("nan")


def mae(y, yhat) -> float:
    """Eq. 22 (NaN for no samples)."""
    err = np.asarray(y) - np.asarray(yhat)
    return float(np.mean(np.abs(err))) if err.size else float("nan")


# ------------------------------------------------------------------------------- learning curves
def learning_curve(comm, make, X, y, test_fractions=(0.1, 0.3, 0.5, 0.7, 0.9), n_splits: int = 100,
                   seed: int = 0) -> list[dict]:
    """Train/test RMSE and MAE over ``n_splits`` random splits per test fraction (Sec. III B).

    Split (f, s) uses the permutation of ``default_rng([seed, f, s])``, whichever rank runs it;
    splits are dealt round-robin over ``comm`` and gathered, so the result is identical on any
    number of ranks. ``make()`` returns a fresh estimator. A split whose training rows cannot be
    fitted (:class:`InputError`, e.g. a per-strain model without two rows in any class) counts as
    NaN. Collective over ``comm``.
    """
    from hpcvib.parallel import collective_call

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(y)
    jobs = [(fi, s) for fi in range(len(test_fractions)) for s in range(n_splits)]

    def run_mine():
        out = []
        for idx in range(comm.rank, len(jobs), comm.size):
            fi, s = jobs[idx]
            perm = np.random.default_rng([seed, fi, s]).permutation(n)
            n_test = min(max(1, int(round(test_fractions[fi] * n))), n - 2)
            test, train = perm[:n_test], perm[n_test:]
            try:
                model = make().fit(X[train], y[train])
            except InputError:  # e.g. no strain class with two rows in a tiny training set
                out.append((idx,) + (float("nan"),) * 4)
                continue
            p_train, p_test = model.predict(X[train]), model.predict(X[test])
            out.append((idx, rmse(y[train], p_train), mae(y[train], p_train), rmse(y[test], p_test), mae(y[test], p_test)))
        return out

    mine = collective_call(comm, run_mine)
    rows = sorted(r for part in comm.allgather(mine) for r in part)
    table = np.array([r[1:] for r in rows]).reshape(len(test_fractions), n_splits, 4)
    curves = []
    for fi, p in enumerate(test_fractions):
        t = table[fi]
        curves.append({"test_fraction": float(p), "n_splits": n_splits,
                       "train_rmse": float(t[:, 0].mean()), "train_rmse_std": float(t[:, 0].std()),
                       "train_mae": float(t[:, 1].mean()), "train_mae_std": float(t[:, 1].std()),
                       "test_rmse": float(t[:, 2].mean()), "test_rmse_std": float(t[:, 2].std()),
                       "test_mae": float(t[:, 3].mean()), "test_mae_std": float(t[:, 3].std())})
    return curves


# ------------------------------------------------------------------------------- persistence
#: folder of the models shipped with the package (``hpcvib predict Fe_mm-Sf-linear ...``)
BUILTIN_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "models")


def builtin_models() -> list[str]:
    """Names of the shipped models (file names without .json / .json.gz)."""
    if not os.path.isdir(BUILTIN_MODEL_DIR):
        return []
    return sorted(f.split(".json")[0] for f in os.listdir(BUILTIN_MODEL_DIR) if ".json" in f)


def resolve_model(name: str) -> str:
    """A model file path: ``name`` itself when it exists, else the shipped model of that name."""
    if os.path.exists(name) or os.sep in name or name.endswith((".json", ".gz")):
        return name
    for suffix in (".json", ".json.gz"):
        candidate = os.path.join(BUILTIN_MODEL_DIR, name + suffix)
        if os.path.exists(candidate):
            return candidate
    return name


def _open_text(path: str, mode: str, compressed: bool):
    import gzip

    return gzip.open(path, mode + "t", encoding="utf-8") if compressed else open(path, mode, encoding="utf-8")


class SavedModel:
    """A fitted model with what it needs to be used safely: target, descriptor settings,
    potential name and hash, training summary."""

    def __init__(self, model, target: str, kind: str, descriptor_settings: dict, potential: str,
                 potential_sha256: str, summary: dict | None = None):
        self.model = model
        self.target = target
        self.kind = kind
        self.descriptor_settings = descriptor_settings
        self.potential = potential
        self.potential_sha256 = potential_sha256
        self.summary = summary or {}

    def save(self, path: str) -> None:
        """JSON (portable, human-readable); written atomically."""
        from hpcvib.fileio import atomic_output

        def encode(obj):
            if isinstance(obj, dict):
                return {k: encode(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [encode(v) for v in obj]
            if isinstance(obj, np.ndarray):
                return {"__array__": obj.tolist(), "shape": list(obj.shape)}
            if isinstance(obj, np.generic):
                return obj.item()
            return obj

        doc = {"format": "hpcvib-model-1", "target": self.target, "kind": self.kind,
               "descriptor_settings": self.descriptor_settings, "potential": self.potential,
               "potential_sha256": self.potential_sha256, "summary": encode(self.summary),
               "state": encode(self.model.state())}
        with atomic_output(path) as tmp:
            with _open_text(tmp, "w", path.endswith(".gz")) as fh:
                json.dump(doc, fh)

    @classmethod
    def load(cls, path: str) -> "SavedModel":
        def decode(obj):
            if isinstance(obj, dict):
                if "__array__" in obj:
                    return np.asarray(obj["__array__"], dtype=float).reshape(obj["shape"])
                return {k: decode(v) for k, v in obj.items()}
            if isinstance(obj, list):
                return [decode(v) for v in obj]
            return obj

        path = resolve_model(path)
        try:
            with _open_text(path, "r", path.endswith(".gz")) as fh:
                doc = json.load(fh)
        except FileNotFoundError:
            raise InputError(f"{path}: model file does not exist (built-in models: "
                             f"{', '.join(builtin_models()) or 'none'})") from None
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: cannot read model file ({exc})") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not a model file ({exc})") from None
        if doc.get("format") != "hpcvib-model-1":
            raise InputError(f"{path}: not an hpcvib model file")
        state = decode(doc["state"])
        model = model_from_state(state)
        return cls(model, doc["target"], doc["kind"], doc["descriptor_settings"], doc["potential"],
                   doc["potential_sha256"], decode(doc["summary"]))

    def check_compatible(self, settings: dict, potential_sha256: str | None, source: str) -> None:
        """Refuse to predict with descriptors computed differently from the training ones."""
        for k in ("jmax", "rcut", "full", "rfac0", "weights"):
            if self.descriptor_settings.get(k) != settings.get(k):
                raise InputError(f"{source}: descriptor setting {k} = {settings.get(k)!r} differs from the "
                                 f"model's {self.descriptor_settings.get(k)!r}")
        if potential_sha256 is not None and potential_sha256 != self.potential_sha256:
            raise InputError(f"{source}: potential differs from the one the model was trained on "
                             f"({self.potential}, sha256 {self.potential_sha256[:12]}…)")
