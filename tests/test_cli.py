"""The command line via subprocess: real files, every bad-input case, one clear line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from hrmedsegsam.model.build import build_model, save_weights

CLI = [sys.executable, "-m", "hrmedsegsam"]


def run(args, env=None, timeout=300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, no traceback, one line on stderr naming the problem."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for frag in fragments:
        assert frag.lower() in lines[0].lower(), lines[0]


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    """A small anisotropic CT-like NIfTI with a bright ellipsoid on slices 3..8."""
    d = tmp_path_factory.mktemp("ct")
    zz, yy, xx = np.mgrid[:12, :40, :56]
    arr = np.full((12, 40, 56), -1000, np.int16)
    arr[((zz - 5.5) / 3.2) ** 2 + ((yy - 18) / 9) ** 2 + ((xx - 25) / 11) ** 2 <= 1] = 150
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.8, 2.5))
    img.SetOrigin((-20.0, 5.0, 100.0))
    img.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    path = d / "ct.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Randomly initialised weights (real file, real loading) for end-to-end runs."""
    torch.manual_seed(0)
    return save_weights(build_model(), tmp_path_factory.mktemp("w") / "random.pt")


def write_prompts(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_info(ct: Path) -> None:
    proc = run(["info", ct])
    assert proc.returncode == 0, proc.stderr
    assert "spacing_xyz: 0.8 x 0.8 x 2.5" in proc.stdout
    assert "orientation:" in proc.stdout
    js = run(["info", ct, "--json"])
    info = json.loads(js.stdout)
    assert info["size_xyz"] == [56, 40, 12]


def test_segment_writes_labels_in_source_geometry(ct: Path, weights: Path, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.json", [
        {"label": 3, "slice": 5, "box": [12, 8, 38, 28]},
        {"label": 7, "slice": 6, "points": [[25, 18, 1], [2, 2, 0]]},
    ])
    out = tmp_path / "labels.nii.gz"
    proc = run(["segment", ct, "--prompts", prompts, "-o", out, "--model", weights])
    assert proc.returncode == 0, proc.stderr
    lab, src = sitk.ReadImage(str(out)), sitk.ReadImage(str(ct))
    assert lab.GetSize() == src.GetSize()
    assert np.allclose(lab.GetSpacing(), src.GetSpacing())
    assert np.allclose(lab.GetOrigin(), src.GetOrigin())
    assert np.allclose(lab.GetDirection(), src.GetDirection())
    arr = sitk.GetArrayFromImage(lab)
    assert set(np.unique(arr)) <= {0, 3, 7}
    assert not arr[[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]].any(), "without --propagate only prompted slices"

    # Refuses to overwrite; --overwrite replaces.
    again = run(["segment", ct, "--prompts", prompts, "-o", out, "--model", weights])
    assert_clean_error(again, "exists", "--overwrite")
    assert run(["segment", ct, "--prompts", prompts, "-o", out, "--model", weights, "--overwrite",
                "--propagate", "--preset", "abdomen"]).returncode == 0


def test_segment_without_weights_fails_clearly(ct: Path, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.json", [{"label": 1, "slice": 5, "box": [12, 8, 38, 28]}])
    proc = run(["segment", ct, "--prompts", prompts, "-o", tmp_path / "o.nii.gz"],
               env={"HRMEDSEGSAM_WEIGHTS": str(tmp_path / "none.pt")})
    assert_clean_error(proc, "weights not found", "none.pt")


@pytest.mark.parametrize(
    "prompts, fragments",
    [
        ("{not json", ["not valid json"]),
        ([{"slice": 5, "box": [1, 1, 9, 9]}], ["missing", "label"]),
        ([{"label": 1, "box": [1, 1, 9, 9]}], ["missing", "slice"]),
        ([{"label": 1, "slice": 5}], ["box", "points"]),
        ([{"label": 1, "slice": 40, "box": [1, 1, 9, 9]}], ["slice 40", "out of range"]),
        ([{"label": 1, "slice": 5, "box": [1, 1, 90, 9]}], ["outside"]),
        ([{"label": 1, "slice": 5, "points": [[100, 5, 1]]}], ["outside"]),
        ([{"label": 1, "slice": 5, "box": [10, 10, 10, 20]}], ["empty"]),
    ],
)
def test_bad_prompts(ct: Path, weights: Path, tmp_path: Path, prompts, fragments) -> None:
    p = write_prompts(tmp_path / "p.json", prompts)
    proc = run(["segment", ct, "--prompts", p, "-o", tmp_path / "o.nii.gz", "--model", weights])
    assert_clean_error(proc, *fragments)
    assert not (tmp_path / "o.nii.gz").exists()


def test_bad_inputs(tmp_path: Path, weights: Path) -> None:
    prompts = write_prompts(tmp_path / "p.json", [{"label": 1, "slice": 0, "box": [1, 1, 5, 5]}])
    assert_clean_error(run(["info", tmp_path / "missing.nii.gz"]), "does not exist")
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"this is not an image")
    assert_clean_error(run(["info", junk]), "junk.nii.gz")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert_clean_error(run(["info", empty]), "no dicom")
    four_d = sitk.JoinSeries([sitk.Image([8, 8, 4], sitk.sitkInt16)] * 3)
    sitk.WriteImage(four_d, str(tmp_path / "4d.nii.gz"))
    assert_clean_error(run(["segment", tmp_path / "4d.nii.gz", "--prompts", prompts, "-o",
                            tmp_path / "o.nii.gz", "--model", weights]), "4 dimensions")
    rgb = sitk.Compose([sitk.Image([8, 8, 4], sitk.sitkUInt8)] * 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    assert_clean_error(run(["info", tmp_path / "rgb.nrrd"]), "3 components")
    bad_w = tmp_path / "bad.pt"
    bad_w.write_bytes(b"\x00" * 100)
    vol = sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16))
    sitk.WriteImage(vol, str(tmp_path / "v.nii.gz"))
    assert_clean_error(run(["segment", tmp_path / "v.nii.gz", "--prompts", prompts, "-o",
                            tmp_path / "o.nii.gz", "--model", bad_w]), "bad.pt", "corrupt")
    assert_clean_error(run(["segment", tmp_path / "v.nii.gz", "--prompts", tmp_path / "nope.json", "-o",
                            tmp_path / "o.nii.gz", "--model", weights]), "nope.json")


def test_benchmark_quick_json_runs_every_measurement() -> None:
    proc = run(["benchmark", "--json", "--quick", "--models", "hrmedsegsam", "--backends", "torch"], timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    m = report["models"][0]
    assert m["params_total"] <= 4_500_000
    assert m["encoder_s_per_slice"]["torch"] > 0 and m["prompt_box_s_512"] > 0
    vol, ses = report["volume"], report["session"]
    assert vol["shape_zyx"][0] == 3 and vol["embed_volume_s"] > 0
    assert vol["propagation_s_per_slice_cold"] > 0 and vol["propagation_s_per_slice_warm"] > 0
    assert ses["peak_rss_mb"] > ses["volume_mb"] > 0
    assert report["targets"] == {}  # a quick run checks no target
