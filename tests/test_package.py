"""Package-level promises: light import, stable API names."""

from __future__ import annotations

import re
import subprocess
import sys


def test_import_pulls_neither_torch_nor_napari() -> None:
    code = (
        "import sys, hrmedsegsam, hrmedsegsam.io, hrmedsegsam.cli, hrmedsegsam.intensity, hrmedsegsam.prompts;"
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt6', 'onnxruntime', 'dask', 'zarr') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_library_never_imports_napari_or_qt(repo_root) -> None:
    """hrmedsegsam/ (the library) must not import napari or Qt anywhere (the plugin adapts it)."""
    pattern = re.compile(r"^\s*(import|from)\s+(napari|qtpy|PyQt\d|PySide\d|magicgui|vispy)\b")
    offenders = [
        f"{path.relative_to(repo_root)}: {line.strip()}"
        for path in (repo_root / "hrmedsegsam").rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if pattern.match(line)
    ]
    assert not offenders


def test_stable_api_names() -> None:
    import hrmedsegsam

    for name in ("read_volume", "write_labels", "load_model", "Predictor"):
        assert callable(getattr(hrmedsegsam, name))
