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
    return subprocess.run(
        CLI + [str(a) for a in args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


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
    prompts = write_prompts(
        tmp_path / "p.json",
        [
            {"label": 3, "slice": 5, "box": [12, 8, 38, 28]},
            {"label": 7, "slice": 6, "points": [[25, 18, 1], [2, 2, 0]]},
        ],
    )
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
    assert not arr[[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]].any(), (
        "without --propagate only prompted slices"
    )

    # Refuses to overwrite; --overwrite replaces.
    again = run(["segment", ct, "--prompts", prompts, "-o", out, "--model", weights])
    assert_clean_error(again, "exists", "--overwrite")
    assert (
        run(
            [
                "segment",
                ct,
                "--prompts",
                prompts,
                "-o",
                out,
                "--model",
                weights,
                "--overwrite",
                "--propagate",
                "--preset",
                "abdomen",
            ]
        ).returncode
        == 0
    )


def test_segment_takes_scribbles_and_lassos(ct: Path, weights: Path, tmp_path: Path) -> None:
    """Strokes in the prompts file go through the widget's translation: a lasso's object stays
    inside it, a negative lasso cuts its pixels out, a scribble alone is a prompt."""
    from hrmedsegsam.scribble import polygon_mask

    lasso = [[10, 6], [42, 5], [44, 31], [11, 32]]
    cut = [[24, 4], [46, 4], [46, 34], [24, 34]]  # the right part of the lasso
    prompts = write_prompts(
        tmp_path / "p.json",
        [
            {"label": 4, "slice": 5, "strokes": [{"lasso": lasso}]},
            {
                "label": 5,
                "slice": 6,
                "strokes": [{"lasso": lasso}, {"lasso": cut, "negative": True}],
            },
            {
                "label": 6,
                "slice": 4,
                "strokes": [
                    {"scribble": [[18, 14], [26, 18], [34, 22]]},
                    {"scribble": [[2, 2], [8, 2]], "negative": False},
                ],
            },
        ],
    )
    out = tmp_path / "labels.nii.gz"
    proc = run(["segment", ct, "--prompts", prompts, "-o", out, "--model", weights])
    assert proc.returncode == 0, proc.stderr
    assert "label 4:" in proc.stdout and "label 6:" in proc.stdout
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    inside = polygon_mask(np.array(lasso, float), arr.shape[1:])
    removed = polygon_mask(np.array(cut, float), arr.shape[1:])
    assert set(np.unique(arr)) <= {0, 4, 5, 6}
    assert not ((arr[5] == 4) & ~inside).any()  # never outside the lasso
    assert not ((arr[6] == 5) & (~inside | removed)).any()  # nor in the negative one
    assert not np.delete(arr, [4, 5, 6], axis=0).any()


def test_segment_without_weights_fails_clearly(ct: Path, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "p.json", [{"label": 1, "slice": 5, "box": [12, 8, 38, 28]}])
    proc = run(
        ["segment", ct, "--prompts", prompts, "-o", tmp_path / "o.nii.gz"],
        env={"HRMEDSEGSAM_WEIGHTS": str(tmp_path / "none.pt")},
    )
    assert_clean_error(proc, "weights not found", "none.pt")


@pytest.mark.parametrize(
    "prompts, fragments",
    [
        ("{not json", ["not valid json"]),
        ([{"slice": 5, "box": [1, 1, 9, 9]}], ["missing", "label"]),
        ([{"label": 1, "box": [1, 1, 9, 9]}], ["missing", "slice"]),
        ([{"label": 1, "slice": 40, "box": [1, 1, 9, 9]}], ["slice 40", "out of range"]),
        ([{"label": 1, "slice": 5, "box": [1, 1, 90, 9]}], ["outside"]),
        ([{"label": 1, "slice": 5, "points": [[100, 5, 1]]}], ["outside"]),
        ([{"label": 1, "slice": 5, "box": [10, 10, 10, 20]}], ["empty"]),
        ([{"label": 1, "slice": 5}], ["box", "points", "strokes"]),
        (
            [{"label": 1, "slice": 5, "strokes": [{"scribble": [[100, 50], [120, 60]]}]}],
            ["stroke #0", "entirely outside"],
        ),
        (
            [{"label": 1, "slice": 5, "strokes": [{"lasso": [[60, 1], [90, 1], [90, 30]]}]}],
            ["stroke #0", "encloses no pixel"],
        ),
        (
            [{"label": 1, "slice": 5, "strokes": [{"lasso": [[1, 1], [9, 9]]}]}],
            ["at least 3 vertices"],
        ),
        (
            [
                {
                    "label": 1,
                    "slice": 5,
                    "strokes": [{"lasso": [[5, 5], [30, 5], [30, 30]], "negative": True}],
                }
            ],
            ["only negative"],
        ),
        (
            [
                {
                    "label": 1,
                    "slice": 5,
                    "strokes": [
                        {"lasso": [[5, 5], [30, 5], [30, 30]]},
                        {"lasso": [[0, 0], [55, 0], [55, 39], [0, 39]], "negative": True},
                    ],
                }
            ],
            ["label 1", "nothing to segment"],
        ),
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
    assert_clean_error(
        run(
            [
                "segment",
                tmp_path / "4d.nii.gz",
                "--prompts",
                prompts,
                "-o",
                tmp_path / "o.nii.gz",
                "--model",
                weights,
            ]
        ),
        "4 dimensions",
    )
    rgb = sitk.Compose([sitk.Image([8, 8, 4], sitk.sitkUInt8)] * 3)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    assert_clean_error(run(["info", tmp_path / "rgb.nrrd"]), "3 components")
    bad_w = tmp_path / "bad.pt"
    bad_w.write_bytes(b"\x00" * 100)
    vol = sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16))
    sitk.WriteImage(vol, str(tmp_path / "v.nii.gz"))
    assert_clean_error(
        run(
            [
                "segment",
                tmp_path / "v.nii.gz",
                "--prompts",
                prompts,
                "-o",
                tmp_path / "o.nii.gz",
                "--model",
                bad_w,
            ]
        ),
        "bad.pt",
        "corrupt",
    )
    assert_clean_error(
        run(
            [
                "segment",
                tmp_path / "v.nii.gz",
                "--prompts",
                tmp_path / "nope.json",
                "-o",
                tmp_path / "o.nii.gz",
                "--model",
                weights,
            ]
        ),
        "nope.json",
    )


def test_benchmark_quick_json_runs_every_measurement() -> None:
    proc = run(
        ["benchmark", "--json", "--quick", "--models", "hrmedsegsam", "--backends", "torch"],
        timeout=600,
    )
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


def test_segment_into_a_session_then_export_it(ct: Path, weights: Path, tmp_path: Path) -> None:
    from hrmedsegsam.io import read_label_table

    session = tmp_path / "session"
    first = write_prompts(
        tmp_path / "a.json", [{"label": 3, "slice": 5, "box": [12, 8, 38, 28], "name": "liver"}]
    )
    proc = run(["segment", ct, "--prompts", first, "--session", session, "--model", weights])
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((session / "session.json").read_text())
    assert [(o["id"], o["name"]) for o in meta["objects"]] == [(3, "liver")]
    second = write_prompts(tmp_path / "b.json", [{"label": 7, "slice": 6, "box": [10, 8, 40, 30]}])
    proc = run(["segment", ct, "--prompts", second, "--session", session, "--model", weights])
    assert proc.returncode == 0, proc.stderr
    assert "1 object(s)" in proc.stdout  # the session was reopened, not started afresh
    meta = json.loads((session / "session.json").read_text())
    assert [o["id"] for o in meta["objects"]] == [3, 7]
    in_session = sitk.GetArrayFromImage(sitk.ReadImage(str(session / meta["labels"])))

    out = tmp_path / "out.nii.gz"
    proc = run(["segment", ct, "--session", session, "-o", out])  # no prompts: no model needed
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), in_session)
    assert [(s.label_id, s.name) for s in read_label_table(tmp_path / "out.labels.tsv")] == [
        (3, "liver"),
        (7, "object 7"),
    ]
    assert_clean_error(
        run(["segment", ct, "--session", session, "-o", out]), "exists", "--overwrite"
    )

    # bad input: one line, non-zero exit, nothing written
    other = tmp_path / "other.nii.gz"
    img = sitk.ReadImage(str(ct))
    sitk.WriteImage(sitk.Add(img, 1), str(other))
    assert_clean_error(
        run(["segment", other, "--session", session, "-o", tmp_path / "x.nii.gz"]),
        "belongs to another image",
    )
    assert_clean_error(
        run(["segment", ct, "--session", tmp_path / "none", "-o", tmp_path / "x.nii.gz"]),
        "not an annotation session",
    )
    assert_clean_error(run(["segment", ct, "-o", tmp_path / "x.nii.gz"]), "--prompts")
    assert_clean_error(
        run(["segment", ct, "--session", session, "-o", tmp_path / "x.nii.gz", "--format", "seg"]),
        ".dcm",
    )
    assert_clean_error(
        run(["segment", ct, "--session", session, "-o", tmp_path / "x.dcm"]), "dicom series"
    )
    (session / "session.json").write_text("{broken")
    assert_clean_error(
        run(["segment", ct, "--session", session, "-o", tmp_path / "x.nii.gz"]), "corrupt"
    )
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "x.dcm").exists()


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique"])
def test_segment_writes_dicom_seg_for_a_dicom_series(
    tmp_path: Path, weights: Path, oblique: bool
) -> None:
    pytest.importorskip("highdicom")
    import pydicom
    from test_io import OBLIQUE, make_image, write_dicom_series

    from hrmedsegsam.io import read_seg, read_volume

    arr = np.full((6, 32, 40), -800, np.int16)
    arr[1:5, 8:24, 10:30] = 120
    image = make_image(arr, (0.7, 0.7, 2.0), (5.0, -3.0, 11.0), OBLIQUE if oblique else None)
    write_dicom_series(tmp_path / "ct", image, "1.2.826.0.1.3680043.2.1125.8." + str(int(oblique)))
    prompts = write_prompts(
        tmp_path / "p.json",
        [
            {"label": 2, "slice": 2, "box": [8, 6, 32, 26], "name": "liver"},
            {"label": 5, "slice": 3, "box": [8, 6, 32, 26], "name": "kidney_left"},
        ],
    )
    out = tmp_path / "seg.dcm"
    proc = run(["segment", tmp_path / "ct", "--prompts", prompts, "-o", out, "--model", weights])
    assert proc.returncode == 0, proc.stderr
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG"
    names = [s.SegmentLabel for s in ds.SegmentSequence]
    labels, segments = read_seg(out, read_volume(tmp_path / "ct"))
    assert {(s.label_id, s.name) for s in segments} == {
        (i, n) for i, n in [(2, "liver"), (5, "kidney_left")] if n in names
    }
    assert segments and set(np.flatnonzero(labels.any(axis=(1, 2)))) <= {
        2,
        3,
    }  # on the prompted frames

    # --format seg with a session; a NIfTI image cannot go out as SEG (one clear line)
    session = tmp_path / "s"
    assert (
        run(
            [
                "segment",
                tmp_path / "ct",
                "--prompts",
                prompts,
                "--session",
                session,
                "--model",
                weights,
            ]
        ).returncode
        == 0
    )
    proc = run(
        [
            "segment",
            tmp_path / "ct",
            "--session",
            session,
            "-o",
            tmp_path / "again.dcm",
            "--format",
            "seg",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(
        read_seg(tmp_path / "again.dcm", read_volume(tmp_path / "ct"))[0], labels
    )
    assert_clean_error(
        run(["segment", tmp_path / "ct", "--session", session, "-o", tmp_path / "again.dcm"]),
        "exists",
    )


def test_segment_starts_from_a_dicom_seg(tmp_path: Path, weights: Path) -> None:
    """``--seg``: a DICOM SEG (written by highdicom onto a SimpleITK-written series) becomes
    the objects to export, keep in a new session, or add prompted objects to."""
    pytest.importorskip("highdicom")
    from test_io import OBLIQUE, make_image, write_dicom_series

    from hrmedsegsam.io import read_label_table, read_volume
    from hrmedsegsam.io.seg import Segment, write_seg

    arr = np.full((6, 32, 40), -800, np.int16)
    arr[1:5, 8:24, 10:30] = 120
    image = make_image(arr, (0.7, 0.7, 2.0), (5.0, -3.0, 11.0), OBLIQUE)
    write_dicom_series(tmp_path / "ct", image, "1.2.826.0.1.3680043.2.1125.8.7")
    write_dicom_series(tmp_path / "b", image, "1.2.826.0.1.3680043.2.1125.8.8", prefix="other")
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    vol = read_volume(tmp_path / "ct")
    labels = np.zeros(vol.shape, np.uint16)
    labels[1:4, 8:20, 10:22] = 3
    labels[4, 2:6, 2:30] = 7  # one slice, asymmetric: a flipped frame order would show
    seg = write_seg(
        tmp_path / "in.dcm", labels, vol, [Segment(3, "liver", (200, 40, 40)), Segment(7, "spleen")]
    )

    out = tmp_path / "out.nii.gz"
    proc = run(["segment", tmp_path / "ct", "--seg", seg, "-o", out])  # no model needed
    assert proc.returncode == 0, proc.stderr
    assert "2 segment(s)" in proc.stdout
    back = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    np.testing.assert_allclose(back.GetDirection(), vol.direction, atol=1e-6)
    table = read_label_table(tmp_path / "out.labels.tsv")
    assert [(s.label_id, s.name) for s in table] == [(3, "liver"), (7, "spleen")]
    assert np.abs(np.subtract(table[0].color, (200, 40, 40))).max() <= 2

    # into a new session, then prompted objects added on top of the SEG's
    session = tmp_path / "session"
    proc = run(["segment", tmp_path / "ct", "--seg", seg, "--session", session])
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((session / "session.json").read_text())
    assert [(o["id"], o["name"]) for o in meta["objects"]] == [(3, "liver"), (7, "spleen")]
    prompts = write_prompts(
        tmp_path / "p.json", [{"label": 9, "slice": 2, "box": [24, 2, 38, 30], "name": "aorta"}]
    )
    out2 = tmp_path / "more.dcm"
    proc = run(
        ["segment", tmp_path / "ct", "--seg", seg, "--prompts", prompts, "-o", out2]
        + ["--model", weights]
    )
    assert proc.returncode == 0, proc.stderr
    from hrmedsegsam.io import read_seg

    more, segments = read_seg(out2, vol)
    kept = more != 9  # the new object wins where it overlaps; the SEG's stay elsewhere
    np.testing.assert_array_equal(more[kept], labels[kept])
    assert "label 9:" in proc.stdout
    assert {(s.label_id, s.name) for s in segments} >= {(3, "liver"), (7, "spleen")}

    # bad input: one clear line, exit 2, nothing written
    bad = tmp_path / "bad.nii.gz"
    proc = run(["segment", tmp_path / "b", "--seg", seg, "-o", bad])
    assert_clean_error(proc, "another dicom series", "1.2.826.0.1.3680043.2.1125.8.7")
    assert proc.returncode == 2 and not bad.exists()
    assert_clean_error(
        run(["segment", tmp_path / "ct.nii.gz", "--seg", seg, "-o", bad]), "dicom series"
    )
    assert_clean_error(
        run(["segment", tmp_path / "ct", "--seg", seg, "--session", session]),
        "already holds a session",
    )
    assert_clean_error(
        run(["segment", tmp_path / "ct", "--seg", tmp_path / "none.dcm", "-o", bad]),
        "no such dicom seg",
    )
    assert_clean_error(run(["segment", tmp_path / "ct", "--seg", seg]), "-o out")
    assert not bad.exists()
