"""Prismatic dislocation loops in bcc crystals (paper Sec. I: the 200-self-interstitial loop whose
formation entropy needs cells of more than 120 000 atoms).

A prismatic loop with Burgers vector b is a platelet of extra (interstitial loop) or missing
(vacancy loop) atoms, one per atomic row along b, on the rows that cross a disc of the habit
plane. In bcc the rows along ½⟨111⟩ are the close-packed directions (one atom every a0√3/2) and
the rows along ⟨100⟩ have one atom every a0; every atom of the crystal lies on exactly one row of
each direction, so "one atom per row" is a complete description:

* the habit plane (normal ``habit``, default b: a pure-edge loop) passes through the loop centre;
* each row along b crosses it at one point; the ``size`` rows whose crossing points lie nearest
  the centre form the disc (ties broken by the crossing point's coordinates, so the choice is
  deterministic);
* on each chosen row the site nearest the plane becomes a ⟨b⟩ dumbbell (interstitial loop) or
  is removed (vacancy loop); relaxation turns the platelet into the loop.

Sites are integer vectors in units of a0/2, as in :mod:`hpcvib.geometry.defects`, so a loop is a
:class:`~hpcvib.geometry.defects.DefectSpec` like any cluster: :func:`loop_spec` returns one and
:func:`~hpcvib.geometry.defects.build_defect` builds it in an (n a0)³ cell.
"""

from __future__ import annotations

import itertools

import numpy as np

from hpcvib.errors import InputError

#: the step between neighbouring atoms of a row along each Burgers direction (units a0/2)
ROW_STEPS = {"111": (1, 1, 1), "100": (2, 0, 0)}


def parse_direction(text: str, what: str) -> np.ndarray:
    """An integer direction from Miller-like digits: '111', '1-10', '100' (signs allowed)."""
    digits, sign = [], 1
    for ch in str(text).strip():
        if ch == "-":
            sign = -1
            continue
        if not ch.isdigit():
            raise InputError(f"{what} {text!r} is not a direction such as 111, 100 or 1-10")
        digits.append(sign * int(ch))
        sign = 1
    if len(digits) != 3 or not any(digits):
        raise InputError(f"{what} {text!r} is not a direction such as 111, 100 or 1-10")
    return np.array(digits, dtype=np.int64)


def _bcc_sites_around(half_width: int) -> np.ndarray:
    """bcc sites (units a0/2: all components even or all odd) with |component| ≤ half_width."""
    r = np.arange(-half_width, half_width + 1)
    grid = np.array(list(itertools.product(r, r, r)), dtype=np.int64)
    parity = grid % 2
    return grid[(parity == parity[:, :1]).all(axis=1)]


def loop_rows(size: int, burgers: str = "111", habit: str | None = None) -> np.ndarray:
    """Sites (units a0/2, centre at the origin) of the ``size`` rows along ``burgers`` that cross
    the habit plane nearest the origin: on each row, the site nearest the plane. Shape (size, 3)."""
    if burgers not in ROW_STEPS:
        raise InputError(f"loop Burgers direction {burgers!r} is not one of {', '.join(ROW_STEPS)}")
    if size < 1:
        raise InputError(f"a loop needs at least one defect (got {size})")
    step = np.array(ROW_STEPS[burgers], dtype=float)
    b_hat = step / np.linalg.norm(step)
    normal = parse_direction(habit or burgers, "habit plane").astype(float)
    normal /= np.linalg.norm(normal)
    cos = float(b_hat @ normal)
    if abs(cos) < 0.1:
        raise InputError(f"habit plane {habit} contains (almost) the Burgers direction {burgers}: "
                         f"not a prismatic loop")
    # the area per row in the plane ⊥ b is a0²/√3 (½⟨111⟩) or a0²/2 (⟨100⟩), ≥ 2 in units (a0/2)²:
    # a disc of `size` rows has a radius ≤ √(size/(2π)) there, 1/cos more in the habit plane; the
    # window is twice that (and the rows' nearest sites lie within one step of the plane)
    half_width = int(np.ceil(2.0 * np.sqrt(size / (2.0 * np.pi)) / abs(cos))) + 4
    sites = _bcc_sites_around(half_width).astype(float)
    t = (sites @ normal) / cos                    # distance along the row to the plane
    crossing = sites - t[:, None] * b_hat         # the row's point in the habit plane
    key = np.round(crossing, 6)
    # per row (same crossing point), the site nearest the plane: sort by row, then |t|, then t
    order = np.lexsort((-t, np.abs(t), key[:, 2], key[:, 1], key[:, 0]))
    first = np.ones(len(order), dtype=bool)
    first[1:] = np.any(key[order][1:] != key[order][:-1], axis=1)
    rows = order[first]
    dist = np.linalg.norm(crossing[rows], axis=1)
    pick = rows[np.lexsort((key[rows, 2], key[rows, 1], key[rows, 0], np.round(dist, 6)))][:size]
    if np.linalg.norm(crossing[pick], axis=1).max() > half_width - 2:
        raise InputError(f"loop of {size}: the enumeration window is too small (internal error)")
    return sites[pick].astype(np.int64)


def loop_motif(burgers: str = "111", habit: str | None = None) -> str:
    """The DefectSpec motif of a loop: 'loop111', or 'loop111-h110' for another habit plane."""
    if habit is None or burgers not in ROW_STEPS:
        return f"loop{burgers}"
    normal = parse_direction(habit, "habit plane")
    pure_edge = np.allclose(np.cross(normal, ROW_STEPS[burgers]), 0.0)  # habit plane ⊥ b
    return f"loop{burgers}" if pure_edge else f"loop{burgers}-h{habit}"


def loop_spec(kind: str, size: int, burgers: str = "111", habit: str | None = None):
    """A :class:`~hpcvib.geometry.defects.DefectSpec` for a prismatic loop of ``size``
    self-interstitials (``kind`` 'I': ⟨b⟩ dumbbells on the rows' sites) or vacancies ('V')."""
    from hpcvib.geometry.defects import DefectSpec

    if kind not in ("I", "V"):
        raise InputError(f"loop kind must be 'I' (interstitial) or 'V' (vacancy), not {kind!r}")
    sites = loop_rows(int(size), burgers, habit)
    if kind == "I":
        axis = np.array(ROW_STEPS[burgers], dtype=np.int64)
        shape = tuple(tuple(int(c) for c in s) + tuple(int(c) for c in axis) for s in sites)
    else:
        shape = tuple(tuple(int(c) for c in s) for s in sites)
    return DefectSpec(kind, int(size), loop_motif(burgers, habit), 0, shape, 0)
