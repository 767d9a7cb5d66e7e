"""Direction of dependencies (DESIGN §1), read from the source: the library never imports
napari, Qt or the plugin; ``model/`` imports nothing above it; the napari command reaches
the CLI through an entry point."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every module each ``.py`` file under ``package`` imports (module level or not)."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def test_the_library_never_imports_napari_qt_or_the_plugin() -> None:
    banned = (
        "napari",
        "napari_plugin",
        "qtpy",
        "PyQt5",
        "PyQt6",
        "PySide2",
        "PySide6",
        "magicgui",
        "superqt",
    )
    found = {
        f: sorted(m for m in mods if m.split(".")[0] in banned)
        for f, mods in imported_modules("hrmedsegsam").items()
    }
    assert {f: m for f, m in found.items() if m} == {}


def test_model_imports_nothing_above_it() -> None:
    # errors and atomic (verified file writes) are leaves: they import nothing of the package
    allowed = ("hrmedsegsam.model", "hrmedsegsam.errors", "hrmedsegsam.atomic")
    found = {
        f: sorted(m for m in mods if m.startswith("hrmedsegsam") and not m.startswith(allowed))
        for f, mods in imported_modules("hrmedsegsam/model").items()
    }
    assert {f: m for f, m in found.items() if m} == {}


def test_the_plugin_imports_nothing_from_the_model_package() -> None:
    found = {
        f: sorted(m for m in mods if m.startswith("hrmedsegsam.model"))
        for f, mods in imported_modules("napari_plugin").items()
    }
    assert {f: m for f, m in found.items() if m} == {}


def test_the_napari_command_is_offered_through_an_entry_point() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    from hrmedsegsam.cli import COMMANDS_GROUP

    target = project["entry-points"][COMMANDS_GROUP]["napari"]
    module, _, attr = target.partition(":")
    import importlib

    register = getattr(importlib.import_module(module), attr)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["napari", "ct.nii.gz"])
    assert args.path == "ct.nii.gz" and callable(args.func)
