"""Defect generator: shape counts against analytic counts and an independent brute-force
orbit enumeration; built cells; seeded variants."""

import itertools

import numpy as np
import pytest

from hpcvib.geometry.defects import (POINT_GROUP, SHELL_D2, DefectSpec, build_defect, canonical, dumbbell_clusters,
                            generate, site_shapes)


@pytest.mark.parametrize("radius", [1, 2, 3, 4, 5])
def test_divacancy_count_is_number_of_shells(radius):
    # every bcc neighbour shell 1..5 is a single orbit of m-3m, so V2 has one shape per shell
    assert len(site_shapes(2, radius)) == radius


def test_trivacancy_first_shell_analytic():
    # two <111>/2 bonds at a common site make 70.5°, 109.5° or 180°: three shapes
    assert len(site_shapes(3, 1)) == 3


def test_di_interstitial_111_first_shell_analytic():
    # a <111> dumbbell pair on a <111>/2 bond: axes parallel to the bond or not -> 2
    assert len(dumbbell_clusters(2, "111", 1)) == 2
    assert len(dumbbell_clusters(1, "110")) == 1 and len(dumbbell_clusters(1, "111")) == 1


def _brute_force_orbits(size, radius):
    """Count connected site sets of ``size`` up to symmetry by explicit orbit marking."""
    d2max = SHELL_D2[radius - 1]
    reach2 = (size - 1) ** 2 * d2max  # a connected set containing 0 lies within (k-1) bonds of 0
    r = int(np.ceil(np.sqrt(reach2)))
    grid = np.array(list(itertools.product(range(-r, r + 1), repeat=3)))
    par = grid % 2
    sites = [tuple(p) for p in grid[(par.min(1) == par.max(1)) & ((grid ** 2).sum(1) <= reach2)]]

    def connected(s):
        s = list(s)
        seen, stack = {s[0]}, [s[0]]
        while stack:
            p = stack.pop()
            for q in s:
                if q not in seen and sum((a - b) ** 2 for a, b in zip(p, q)) <= d2max:
                    seen.add(q)
                    stack.append(q)
        return len(seen) == len(s)

    others = [p for p in sites if p != (0, 0, 0)]
    seen_sets, orbits = set(), 0
    for combo in itertools.combinations(others, size - 1):
        s = frozenset(((0, 0, 0),) + combo)
        if s in seen_sets or not connected(s):
            continue
        orbits += 1
        pts = np.array(sorted(s))
        for op in POINT_GROUP:
            img = pts @ op.T
            for origin in img:
                seen_sets.add(frozenset(tuple(p) for p in img - origin))
    return orbits


@pytest.mark.parametrize("size,radius", [(3, 2), (4, 1)])
def test_shapes_match_brute_force_orbits(size, radius):
    assert len(site_shapes(size, radius)) == _brute_force_orbits(size, radius)


def test_canonical_form_invariant_under_symmetry_and_translation():
    rng = np.random.default_rng(3)
    for shape in site_shapes(4, 2):
        pts = np.array(shape)
        op = POINT_GROUP[rng.integers(48)]
        moved = pts @ op.T + np.array([2, 4, -6])
        assert canonical(moved[rng.permutation(len(moved))]) == shape


def test_generated_shapes_are_distinct():
    specs = generate(vacancies=[3], interstitials=[2], orientations=["110"], crowdions=False)
    shapes = [(s.kind, s.motif, s.shape) for s in specs]
    assert len(shapes) == len(set(shapes))


def test_built_cells_have_the_right_atoms():
    a0, n = 2.855, 4
    for spec in generate(vacancies=[1, 3], interstitials=[1, 2], shell_radius=1):
        atoms = build_defect(spec, n, a0)
        extra = {"V": -spec.size, "I": spec.size}[spec.kind]
        assert len(atoms) == 2 * n ** 3 + extra, spec.key
        assert atoms.info["key"] == spec.key


def test_variants_are_seeded():
    spec = DefectSpec("V", 1, "vacancy", 0, ((0, 0, 0),), 1)
    a = build_defect(spec, 4, 2.855, seed=1)
    b = build_defect(spec, 4, 2.855, seed=1)
    c = build_defect(spec, 4, 2.855, seed=2)
    ideal = build_defect(DefectSpec("V", 1, "vacancy", 0, ((0, 0, 0),), 0), 4, 2.855)
    assert np.array_equal(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)
    moved = np.linalg.norm(a.positions - ideal.positions, axis=1) > 0
    assert 0 < moved.sum() < len(a)


def _brute_force_decorated_pair_orbits(radius):
    """Orbits of two dumbbells (any ⟨110⟩/⟨111⟩ axes) on sites ``radius`` shells apart at most,
    by explicit marking of every image under the 48 operations and translations (independent
    of :func:`canonical`)."""
    d2max = SHELL_D2[radius - 1]
    r = int(np.ceil(np.sqrt(d2max)))
    grid = np.array(list(itertools.product(range(-r, r + 1), repeat=3)))
    par = grid % 2
    bonds = [tuple(p) for p in grid[(par.min(1) == par.max(1)) & ((grid ** 2).sum(1) <= d2max)
                                    & ((grid ** 2).sum(1) > 0)]]
    axes = sorted({tuple(int(c) for c in v) for v in
                   [(1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1), (0, 1, -1),
                    (1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1)]})

    def norm(ax):
        ax = tuple(int(c) for c in ax)
        first = next(c for c in ax if c)
        return ax if first > 0 else tuple(-c for c in ax)

    seen, orbits = set(), 0
    for bond in bonds:
        for a0, a1 in itertools.product(axes, repeat=2):
            config = frozenset({((0, 0, 0), a0), (bond, a1)})
            if config in seen:
                continue
            orbits += 1
            for op in POINT_GROUP:
                img = [(tuple(int(c) for c in op @ np.array(s)), norm(op @ np.array(a))) for s, a in config]
                for origin, _ in img:
                    seen.add(frozenset((tuple(p - o for p, o in zip(s, origin)), a) for s, a in img))
    return orbits


@pytest.mark.parametrize("radius", [1, 2])
def test_mixed_dumbbell_pairs_match_brute_force_orbits(radius):
    assert len(dumbbell_clusters(2, "mixed", radius)) == _brute_force_decorated_pair_orbits(radius)


def test_mixed_clusters_contain_the_parallel_ones():
    mixed = set(dumbbell_clusters(3, "mixed", 1))
    assert set(dumbbell_clusters(3, "110", 1)) <= mixed and set(dumbbell_clusters(3, "111", 1)) <= mixed
    assert len(dumbbell_clusters(1, "mixed")) == 2


def test_families_merge_pools_and_sample_reproducibly():
    from hpcvib.geometry.defects import generate_families

    fams = [{"kind": "V", "sizes": [2], "shell_radius": 2}, {"kind": "V", "sizes": [2], "shell_radius": 4}]
    specs = generate_families(fams)
    assert [s.key for s in specs] == [f"V2-s{i:03d}-v00" for i in range(4)]  # radius 4 contains radius 2
    sampled = [{"kind": "I", "sizes": [3], "orientations": ["mixed"], "shell_radius": 1, "max_clusters": 50}]
    a, b = generate_families(sampled, seed=5), generate_families(sampled, seed=5)
    assert len(a) == 50 and [s.shape for s in a] == [s.shape for s in b]
    assert {s.shape for s in a} <= set(dumbbell_clusters(3, "mixed", 1))
    crowd = generate_families([{"kind": "I", "sizes": [1, 2], "orientations": ["crowdion"]}])
    assert [s.key for s in crowd] == ["I1-crowdion-s000-v00"]
