"""Benchmark and pictures: exact local formation entropies ΔS_i (Eq. 7–10) at scale.

    # one structure through the command line, as a user would (under /usr/bin/time -v):
    python bench/local_entropies.py run vacancy16k ~/hpcvib-runs/loops/vacancy20.extxyz -- --local-route quadrature
    python bench/local_entropies.py run loop20 ~/hpcvib-runs/loops/loop20_16.extxyz -- --local-radius 12
    # a picture of a frame that already holds dS_local_kB (hpcvib export of a [thermo] local job):
    python bench/local_entropies.py draw I2 exported.extxyz --structure KEY
    # the quadrature route against the dense one on the same cell (after two runs):
    python bench/local_entropies.py compare vac2k_dense vac2k_quadrature
    python bench/local_entropies.py --table

``run`` calls ``hpcvib thermo STRUCTURE -p Fe_mm --reference auto --local -o ...`` plus the
arguments after ``--``, appends one JSON line (wall time, peak memory, the sum checks, the
far-field remainder, ΔS_i by distance shell from the defect) to
bench/results/local_entropies.jsonl and draws results/local/NAME.png (a slice coloured by ΔS_i).
Per-atom structures go to ~/hpcvib-runs/local/.
"""

import argparse
import json
import os
import platform
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
from loops import timed  # noqa: E402

RESULTS = os.path.join(HERE, "results", "local_entropies.jsonl")
PICTURES = os.path.join(ROOT, "results", "local")
WORK = os.path.expanduser("~/hpcvib-runs/local")
SHELLS = (0.0, 2.6, 3.0, 5.0, 8.0, 12.0, 16.0, 1e9)


def shells(atoms, ds) -> list:
    """ΔS_i summed and averaged by distance (Å) from the atom of largest ΔS_i."""
    from hpcvib.geometry.structures import minimum_image

    centre = atoms.positions[int(np.argmax(ds))]
    d = np.linalg.norm(minimum_image(atoms.positions - centre, atoms.get_cell()), axis=1)
    out = []
    for lo, hi in zip(SHELLS[:-1], SHELLS[1:]):
        sel = (d >= lo) & (d < hi)
        if sel.any():
            out.append({"from_A": lo, "to_A": hi if hi < 1e8 else None, "atoms": int(sel.sum()),
                        "sum_kB": float(ds[sel].sum()), "mean_kB": float(ds[sel].mean())})
    return out


def draw(name, atoms, ds, title) -> dict:
    from hpcvib.learning.report import local_entropy_slice

    os.makedirs(PICTURES, exist_ok=True)
    return local_entropy_slice(os.path.join(PICTURES, f"{name}.png"), atoms, ds, title)


def run(name, structure, extra) -> dict:
    import ase.io

    os.makedirs(WORK, exist_ok=True)
    out = os.path.join(WORK, f"{name}_local.extxyz")
    res = timed(["thermo", structure, "-p", "Fe_mm", "--reference", "auto", "--local", "-o", out, "--json"] + extra,
                timeout=4 * 3600)
    row = {"name": name, "structure": os.path.basename(structure), "args": extra, "rc": res["rc"],
           "wall_s": res["wall_s"], "peak_rss_mb": res["peak_rss_mb"], "host": platform.node()}
    if res["rc"] == 0 and res["json"]:
        local = res["json"]["local"]
        atoms = ase.io.read(out)
        ds = atoms.arrays["dS_local_kB"]
        row.update(n_atoms=len(atoms), S_f_kB=local["S_f_Eq20_kB"], local=local, shells=shells(atoms, ds),
                   picture=draw(name, atoms, ds, f"{name}: {len(atoms)} atoms, S_f = {local['S_f_Eq20_kB']:.3f} k_B"))
    else:
        row["message"] = res["message"]
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def compare(name_a: str, name_b: str) -> dict:
    """Largest per-atom difference of S_i and ΔS_i between two runs of the same structure (k_B),
    appended to the results as a row of its own."""
    import ase.io

    a = ase.io.read(os.path.join(WORK, f"{name_a}_local.extxyz"))
    b = ase.io.read(os.path.join(WORK, f"{name_b}_local.extxyz"))
    row = {"compare": [name_a, name_b], "n_atoms": len(a)}
    for key in ("S_local_kB", "dS_local_kB"):
        if key in a.arrays and key in b.arrays:
            row[f"max_abs_diff_{key}"] = float(np.abs(a.arrays[key] - b.arrays[key]).max())
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def table() -> None:
    rows = [json.loads(line) for line in open(RESULTS)]
    print("| structure | atoms | arguments | atoms evaluated (quadratures) | wall | peak memory | Σ ΔS_i | exact S_f | "
          "far-field remainder |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "compare" in r:
            print(f"| {r['compare'][0]} vs {r['compare'][1]} | {r['n_atoms']} | largest per-atom difference: "
                  f"S_i {r.get('max_abs_diff_S_local_kB', float('nan')):.1e}, ΔS_i "
                  f"{r.get('max_abs_diff_dS_local_kB', float('nan')):.1e} k_B |||||||")
            continue
        if r["rc"] != 0:
            continue
        loc = r["local"]
        remainder = loc.get("far_field_remainder_kB")
        print(f"| {r['name']} | {r['n_atoms']} | {' '.join(r['args'])} | {loc['atoms_computed']} "
              f"({loc.get('quadratures', '—')}) | {r['wall_s']:.0f} s | {r['peak_rss_mb'] / 1024:.1f} GB | "
              f"{loc['sum_dS_local_kB']:.6f} | {loc['S_f_Eq20_kB']:.6f} | "
              f"{'—' if remainder is None else f'{remainder:+.4f}'} |")


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        k = argv.index("--")
        argv, extra = argv[:k], argv[k + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", nargs="?", choices=["run", "draw", "compare"])
    ap.add_argument("name", nargs="?")
    ap.add_argument("path", nargs="?")
    ap.add_argument("--structure", help="draw: the frame whose info 'structure' is this key")
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args(argv)
    if args.table:
        table()
    elif args.action == "run":
        print(json.dumps(run(args.name, os.path.expanduser(args.path), extra)))
    elif args.action == "draw":
        import ase.io

        frames = ase.io.read(args.path, ":")
        frame = next(f for f in frames if args.structure in (None, f.info.get("structure"), f.info.get("key")))
        print(json.dumps(draw(args.name, frame, frame.arrays["dS_local_kB"], f"{args.name}: {len(frame)} atoms")))
    elif args.action == "compare":
        print(json.dumps(compare(args.name, args.path)))
    else:
        ap.error("give run, draw, compare or --table")


if __name__ == "__main__":
    main()
