"""Surrogates: bSO(4) descriptors, linear / EQML / per-strain models, training tables, prediction, reports."""
