"""The npe2 manifest: valid, identical at the root and in the package, importable."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

REPO = Path(__file__).resolve().parents[2]


def test_root_and_package_manifest_identical():
    assert (REPO / "napari.yaml").read_bytes() == (
        REPO / "napari_plugin" / "napari.yaml"
    ).read_bytes()


def test_manifest_name_is_distribution_name():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    manifest = npe2.PluginManifest.from_file(REPO / "napari.yaml")
    assert manifest.name == project["name"]
    entry = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "entry-points"
    ]
    assert entry["napari.manifest"]["hrmedsegsam"] == "napari_plugin:napari.yaml"


def test_every_python_name_imports():
    manifest = npe2.PluginManifest.from_file(REPO / "napari_plugin" / "napari.yaml")
    commands = manifest.contributions.commands
    assert {c.id for c in commands} >= {
        "hrmedsegsam.get_reader",
        "hrmedsegsam.write_labels",
        "hrmedsegsam.annotate",
        "hrmedsegsam.sample_ct",
        "hrmedsegsam.sample_radiograph",
    }
    for command in commands:
        module, attr = command.python_name.split(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), command.python_name
    assert manifest.contributions.readers and manifest.contributions.writers
    assert manifest.contributions.widgets and len(manifest.contributions.sample_data) == 2


def test_plugin_package_import_is_light():
    import subprocess

    code = (
        "import sys, napari_plugin, napari_plugin._reader, napari_plugin._writer, "
        "napari_plugin._sample_data; "
        "bad = [m for m in ('torch', 'qtpy', 'PyQt6') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_the_reader_claims_only_files_it_can_read(tmp_path):
    """A PNG goes to napari's own reader without a "Choose reader" question."""
    from npe2 import PluginManager

    pm = PluginManager.instance()

    def claims(path) -> bool:
        return any(r.plugin_name == "hrmedsegsam" for r in pm.iter_compatible_readers([str(path)]))

    assert not claims(tmp_path / "photo.png") and not claims(tmp_path / "notes.txt")
    for name in ("ct.nii.gz", "ct.nii", "ct.nrrd", "ct.mha", "slice.dcm"):
        assert claims(tmp_path / name), name
    assert claims(tmp_path)  # a DICOM series folder
