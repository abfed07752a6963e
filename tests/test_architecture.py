"""The package layout is the architecture: subpackages form layers and an import only goes down.

Layers, bottom up (README, "Architecture"): foundations (top-level modules) → parallel → geometry
→ potentials → linalg → physics → landscape → learning → workflow → cli. Imports inside
functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import pkgutil

import pytest

import hpcvib

LAYERS = ("foundations", "parallel", "geometry", "potentials", "linalg", "physics", "landscape",
          "learning", "workflow", "cli")
PACKAGE_DIR = pathlib.Path(hpcvib.__file__).parent


def _layer(module: str) -> str:
    """Layer of a dotted module name: its first subpackage, or foundations for top-level modules."""
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE_DIR / parts[1]).is_dir() and parts[1] in LAYERS:
        return parts[1]
    return "foundations"


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) of every ``hpcvib`` import in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "hpcvib":
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, "." * node.level + (node.module or "")))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names
                         if alias.name.split(".")[0] == "hpcvib")
    return found


def _modules() -> list[tuple[str, pathlib.Path]]:
    out = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        out.append((".".join(parts), path))
    return out


def test_every_subpackage_is_a_known_layer():
    subpackages = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").exists()} - {"data"}
    assert subpackages <= set(LAYERS), subpackages - set(LAYERS)


def test_imports_only_go_down_the_layers():
    upward = []
    for module, path in _modules():
        for line, target in _imports(path):
            if target.startswith("."):
                upward.append(f"{path}:{line}: relative import {target} (use hpcvib.<layer>.<module>)")
                continue
            if LAYERS.index(_layer(target)) > LAYERS.index(_layer(module)):
                upward.append(f"{path}:{line}: {_layer(module)} imports {target} ({_layer(target)})")
    assert not upward, "\n".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check above can fail: a geometry module importing a learning module is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from hpcvib.learning.models import SavedModel\n")
    (line, target), = _imports(bad)
    assert line == 2 and LAYERS.index(_layer(target)) > LAYERS.index(_layer("hpcvib.geometry.bad"))


@pytest.mark.parametrize("name", [m.name for m in pkgutil.walk_packages(hpcvib.__path__, "hpcvib.")])
def test_every_module_imports(name):
    importlib.import_module(name)
