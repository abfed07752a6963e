"""Point-defect clusters in bcc supercells (paper Sec. II A: vacancy clusters V1–V4 and
self-interstitial clusters I1–I4 in (n a0)³ bcc Fe, n = 8 → 1024 sites).

Lattice sites are integer vectors in units of a0/2 (bcc: all components even or all odd), so
symmetry operations and translations are exact integer arithmetic:

* a *shape* is a connected set of sites, two sites being connected when they are at most the
  ``shell_radius``-th neighbour shell apart (1: ⟨111⟩/2, 2: ⟨100⟩, 3: ⟨110⟩, 4: ⟨311⟩/2, 5: ⟨111⟩);
* shapes are enumerated by growing every distinct (k−1)-site shape by one connected site, and are
  distinct up to the 48 operations of the cubic point group m-3m and lattice translations
  (canonical form: the lexicographically smallest sorted, translated site list over the 48
  operations);
* interstitial clusters put a dumbbell of the same orientation (parallel-dumbbell clusters) on each
  site of a shape; an orientation is an axis (sign-less direction), ⟨110⟩ or ⟨111⟩; the single
  ⟨111⟩ crowdion is one extra atom midway between two nearest neighbours.

:func:`generate` returns :class:`DefectSpec` records (labels + a deterministic seed);
:func:`build_defect` turns one into an ASE Atoms object, with seeded random local displacements
for the randomised variants.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from hpcvib.errors import InputError
from hpcvib.geometry.structures import minimum_image

#: squared neighbour-shell distances in (a0/2)² for shells 1..5 of bcc
SHELL_D2 = (3, 4, 8, 11, 12)

#: half the dumbbell separation before relaxation, in units of a0 (relaxation sets the real one)
DUMBBELL_HALF_SEPARATION = 0.3

ORIENTATIONS = {"110": (1, 1, 0), "111": (1, 1, 1)}


def _point_group() -> np.ndarray:
    """The 48 signed permutation matrices of m-3m, shape (48, 3, 3), integer."""
    ops = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3), dtype=np.int64)
            for row, (col, s) in enumerate(zip(perm, signs)):
                m[row, col] = s
            ops.append(m)
    return np.array(ops)


POINT_GROUP = _point_group()


def _axis(v) -> tuple:
    """Sign-normalised direction (first non-zero component positive)."""
    v = tuple(int(c) for c in v)
    for c in v:
        if c != 0:
            return v if c > 0 else tuple(-x for x in v)
    return v


def canonical(sites: np.ndarray, axes: np.ndarray | None = None) -> tuple:
    """Canonical form of a decorated site set under m-3m and lattice translations.

    ``sites``: (k, 3) integer site vectors (a0/2 units); ``axes``: optional (k, 3) integer
    dumbbell axes. Two clusters are symmetry-equivalent iff their canonical forms are equal.
    """
    sites = np.asarray(sites, dtype=np.int64)
    best = None
    for op in POINT_GROUP:
        s = sites @ op.T
        if axes is None:
            rows = [tuple(r) for r in s]
        else:
            a = np.asarray(axes, dtype=np.int64) @ op.T
            rows = [tuple(r) + _axis(ax) for r, ax in zip(s, a)]
        rows.sort()
        origin = rows[0][:3]
        key = tuple(tuple(r[i] - origin[i] for i in range(3)) + tuple(r[3:]) for r in rows)
        if best is None or key < best:
            best = key
    return best


def _neighbour_offsets(shell_radius: int) -> np.ndarray:
    if not 1 <= shell_radius <= len(SHELL_D2):
        raise InputError(f"shell_radius must be 1..{len(SHELL_D2)}, got {shell_radius}")
    d2max = SHELL_D2[shell_radius - 1]
    r = int(np.ceil(np.sqrt(d2max)))
    grid = np.array(list(itertools.product(range(-r, r + 1), repeat=3)))
    parity = grid % 2
    ok = (parity.min(axis=1) == parity.max(axis=1)) & ((grid ** 2).sum(axis=1) <= d2max)
    ok &= (grid ** 2).sum(axis=1) > 0
    return grid[ok]


def site_shapes(size: int, shell_radius: int = 2) -> list[tuple]:
    """All symmetry-distinct connected shapes of ``size`` bcc sites, sorted (canonical forms)."""
    if size < 1:
        raise InputError(f"cluster size must be >= 1, got {size}")
    offsets = _neighbour_offsets(shell_radius)
    shapes = {canonical(np.zeros((1, 3), dtype=np.int64))}
    for _ in range(size - 1):
        grown = set()
        for shape in shapes:
            pts = np.array(shape)
            present = set(shape)
            for p in pts:
                for q in p + offsets:
                    if tuple(q) not in present:
                        grown.add(canonical(np.vstack([pts, q])))
        shapes = grown
    return sorted(shapes)


def axis_family(orientation: str) -> list[tuple]:
    """The sign-less axes of one dumbbell family (⟨110⟩: 6, ⟨111⟩: 4), or of both ('mixed')."""
    if orientation == "mixed":
        return axis_family("110") + axis_family("111")
    if orientation not in ORIENTATIONS:
        raise InputError(f"unknown dumbbell orientation {orientation!r} (use {', '.join(ORIENTATIONS)} or mixed)")
    return sorted({_axis(op @ np.array(ORIENTATIONS[orientation])) for op in POINT_GROUP})


#: mixed-orientation clusters are enumerated exhaustively up to this many (shape, axes)
#: assignments per size, and sampled (seeded) above it
MIXED_EXHAUSTIVE_LIMIT = 20000


def dumbbell_clusters(size: int, orientation: str, shell_radius: int = 2, seed: int = 0,
                      samples_per_shape: int = 200) -> list[tuple]:
    """Symmetry-distinct dumbbell clusters on every connected shape of ``size`` sites.

    ``orientation`` '110' or '111': parallel dumbbells (every shape × every axis of the
    family). 'mixed': each dumbbell independently takes any of the 6 ⟨110⟩ and 4 ⟨111⟩ axes
    (non-parallel clusters, rings); all assignments when there are at most
    :data:`MIXED_EXHAUSTIVE_LIMIT`, else ``samples_per_shape`` seeded random ones per shape —
    distinct up to m-3m and lattice translations either way."""
    axes = axis_family(orientation)
    shapes = site_shapes(size, shell_radius)
    out = set()
    if orientation != "mixed":
        for shape in shapes:
            pts = np.array(shape)
            for ax in axes:
                out.add(canonical(pts, np.tile(ax, (len(pts), 1))))
        return sorted(out)
    axes = np.array(axes, dtype=np.int64)
    exhaustive = len(shapes) * len(axes) ** size <= MIXED_EXHAUSTIVE_LIMIT
    rng = np.random.default_rng([seed, size, shell_radius])
    for shape in shapes:
        pts = np.array(shape)
        if exhaustive:
            choices = itertools.product(range(len(axes)), repeat=size)
        else:
            choices = (tuple(c) for c in rng.integers(0, len(axes), size=(samples_per_shape, size)))
        for choice in choices:
            out.add(canonical(pts, axes[list(choice)]))
    return sorted(out)


@dataclass(frozen=True)
class DefectSpec:
    """One configuration to build: ``kind`` 'V' (vacancies) or 'I' (interstitials); ``motif`` is
    'vacancy', '110', '111' or 'crowdion'; ``shape`` the canonical decorated site list;
    ``variant`` 0 is the ideal cluster, > 0 a randomised one."""

    kind: str
    size: int
    motif: str
    shape_index: int
    shape: tuple
    variant: int

    @property
    def key(self) -> str:
        motif = "" if self.motif == "vacancy" else f"-{self.motif}"
        return f"{self.kind}{self.size}{motif}-s{self.shape_index:03d}-v{self.variant:02d}"

    def labels(self) -> dict:
        d = asdict(self)
        d["shape"] = repr(self.shape)
        d["key"] = self.key
        return d


def generate_families(families, variants: int = 0, seed: int = 0) -> list[DefectSpec]:
    """Clusters of several families, e.g. ``{"kind": "V", "sizes": [4], "shell_radius": 5}`` or
    ``{"kind": "I", "sizes": [2, 3], "orientations": ["mixed"], "shell_radius": 2,
    "max_clusters": 500}``; a crowdion family is ``{"kind": "I", "sizes": [1],
    "orientations": ["crowdion"]}``. The clusters of one (kind, size, motif) from all families
    are merged (a larger shell radius contains the smaller), deduplicated by canonical form and
    numbered in canonical order, so keys do not depend on the order of the families.
    ``max_clusters`` > 0 keeps a seeded random subset of that family's clusters. A family with
    ``loop_burgers`` ('111' or '100', optional ``loop_habit``) is a prismatic dislocation loop of
    each size (:mod:`hpcvib.geometry.loops`), e.g. ``{"kind": "I", "sizes": [20, 50],
    "loop_burgers": "111"}``."""
    from hpcvib.geometry.loops import loop_spec

    pools: dict = {}
    for fam in families:
        kind, radius = fam["kind"], int(fam.get("shell_radius", 2))
        if "loop_burgers" in fam:  # prismatic loops: one spec per size (hpcvib.geometry.loops)
            for size in fam["sizes"]:
                spec = loop_spec(kind, int(size), fam["loop_burgers"], fam.get("loop_habit"))
                pools.setdefault((kind, int(size), spec.motif), set()).add(spec.shape)
            continue
        for size in fam["sizes"]:
            motifs = ["vacancy"] if kind == "V" else list(fam.get("orientations", ["110", "111"]))
            for motif in motifs:
                if motif == "crowdion":
                    clusters = [((0, 0, 0, 1, 1, 1),)] if int(size) == 1 else []
                elif kind == "V":
                    clusters = site_shapes(int(size), radius)
                else:
                    clusters = dumbbell_clusters(int(size), motif, radius, seed)
                limit = int(fam.get("max_clusters", 0))
                if 0 < limit < len(clusters):
                    rng = np.random.default_rng([seed, zlib.crc32(f"{kind}{size}{motif}{radius}".encode())])
                    clusters = [clusters[i] for i in sorted(rng.choice(len(clusters), limit, replace=False))]
                pools.setdefault((kind, int(size), motif), set()).update(clusters)
    specs = []
    for (kind, size, motif), clusters in sorted(pools.items()):
        for i, shape in enumerate(sorted(clusters)):
            for v in range(variants + 1):
                specs.append(DefectSpec(kind, size, motif, i, shape, v))
    return specs


def generate(vacancies=(1, 2, 3, 4), interstitials=(1, 2, 3, 4), orientations=("110", "111"),
             crowdions: bool = True, shell_radius: int = 2, variants: int = 0,
             max_shapes: int = 0) -> list[DefectSpec]:
    """Every symmetry-distinct cluster asked for, each as the ideal cluster plus ``variants``
    randomised copies. ``max_shapes`` > 0 keeps the first shapes (canonical order) per family."""
    specs: list[DefectSpec] = []

    def add(kind, size, motif, shapes):
        if max_shapes > 0:
            shapes = shapes[:max_shapes]
        for i, shape in enumerate(shapes):
            for v in range(variants + 1):
                specs.append(DefectSpec(kind, size, motif, i, shape, v))

    for k in vacancies:
        add("V", int(k), "vacancy", site_shapes(int(k), shell_radius))
    for k in interstitials:
        for o in orientations:
            add("I", int(k), o, dumbbell_clusters(int(k), o, shell_radius))
    if crowdions and 1 in [int(k) for k in interstitials]:
        add("I", 1, "crowdion", [((0, 0, 0, 1, 1, 1),)])
    return specs


def _site_index(n: int):
    """Integer bcc site vectors of the (n a0)³ cell (units a0/2) and a lookup table."""
    corner = 2 * np.array(list(itertools.product(range(n), repeat=3)), dtype=np.int64)
    sites = np.vstack([corner, corner + 1])
    lookup = {tuple(s): i for i, s in enumerate(sites)}
    return sites, lookup


def build_defect(spec: DefectSpec, n: int, a0: float, symbol: str = "Fe", seed: int = 0,
                 displacement: float = 0.1, displacement_radius: float = 4.0):
    """ASE Atoms of ``spec`` in the (n a0)³ bcc cell with lattice parameter ``a0`` (Å).

    The cluster sits at the cell centre. Variants > 0 get Gaussian displacements of standard
    deviation ``displacement`` (Å) on every atom within ``displacement_radius`` (Å) of the
    cluster centre, drawn from a generator seeded by (``seed``, the spec key), so they are
    reproducible on any number of ranks.
    """
    from ase import Atoms

    sites, lookup = _site_index(n)
    shape = np.array(spec.shape, dtype=np.int64)
    extent = (shape[:, :3].max(axis=0) - shape[:, :3].min(axis=0)).max() + 2
    if extent >= 2 * n:
        raise InputError(f"{spec.key}: cluster does not fit in a ({n} a0)^3 cell")
    centre = np.full(3, n, dtype=np.int64)
    cluster = (shape[:, :3] + centre) % (2 * n)
    remove = [lookup[tuple(s)] for s in cluster]
    half = a0 / 2.0
    extra = []
    if spec.motif == "crowdion":
        extra.append((cluster[0] + 0.5 * shape[0, 3:]) * half)
        remove = []
    elif spec.kind == "I":
        for site, ax in zip(cluster, shape[:, 3:]):
            u = ax / np.linalg.norm(ax) * DUMBBELL_HALF_SEPARATION * a0
            extra += [site * half + u, site * half - u]
    keep = np.setdiff1d(np.arange(len(sites)), remove)
    positions = np.vstack([sites[keep] * half] + ([np.array(extra)] if extra else []))
    atoms = Atoms(symbol * len(positions), positions=positions, cell=np.eye(3) * n * a0, pbc=True)
    atoms.wrap()
    if spec.variant > 0 and displacement > 0:
        rng = np.random.default_rng([seed, zlib.crc32(spec.key.encode())])
        centre_xyz = cluster[:, :3].mean(axis=0) * half
        vec = minimum_image(atoms.positions - centre_xyz, atoms.get_cell())
        near = np.linalg.norm(vec, axis=1) <= displacement_radius
        atoms.positions[near] += rng.normal(0.0, displacement, size=(int(near.sum()), 3))
    atoms.info.update(spec.labels())
    return atoms
