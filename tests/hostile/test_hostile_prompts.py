"""Classes 5-7 of issue 16 for prompts: hostile prompt files and API prompts, one line each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BOX = '"box": [10, 10, 30, 24]'

HOSTILE_FILES = {
    # text of the prompts file -> fragment the one error line must hold
    "nan_box": ('[{"label": 1, "slice": 2, "box": [NaN, 10, 30, 24]}]', "finite number"),
    "infinity_point": ('[{"label": 1, "slice": 2, "points": [[Infinity, 5]]}]', "finite number"),
    "1e400_box": ('[{"label": 1, "slice": 2, "box": [1e400, 10, 30, 24]}]', "finite number"),
    "nan_label": (f'[{{"label": NaN, "slice": 2, {BOX}}}]', "integer"),
    "infinity_label": (f'[{{"label": Infinity, "slice": 2, {BOX}}}]', "integer"),
    "-infinity_slice": (f'[{{"label": 1, "slice": -Infinity, {BOX}}}]', "integer"),
    "1e400_slice": (f'[{{"label": 1, "slice": 1e400, {BOX}}}]', "integer"),
    "bool_label": (f'[{{"label": true, "slice": 2, {BOX}}}]', "integer"),
    "bool_coordinate": ('[{"label": 1, "slice": 2, "points": [[true, 5]]}]', "finite number"),
    "bool_point_label": ('[{"label": 1, "slice": 2, "points": [[5, 5, false]]}]', "integer"),
    "bool_points": ('[{"label": 1, "slice": 2, "points": true}]', "'points' must be a list"),
    "bool_box": ('[{"label": 1, "slice": 2, "box": true}]', "'box' must be"),
    "object_points": ('[{"label": 1, "slice": 2, "points": {"x": 1}}]', "'points' must be a list"),
    "nested_point": ('[{"label": 1, "slice": 2, "points": [[[5, 5]]]}]', "each point"),
    "deep_nesting": ("[" * 100_000 + "]" * 100_000, "not usable json"),
    "huge_integer": ("[" + "9" * 5000 + "]", "not usable json"),
    "too_many_points": (
        json.dumps([{"label": 1, "slice": 2, "points": [[5, 5]] * 10_000}]),
        "at most 256",
    ),
    "too_many_objects": (
        json.dumps([{"label": 1, "slice": 2, "box": [1, 1, 5, 5]}] * 2000),
        "at most 1024",
    ),
    "nan_vertex": ('[{"label": 1, "slice": 2, "strokes": [{"scribble": [[NaN, 5]]}]}]', "finite"),
    "infinity_vertex": (
        '[{"label": 1, "slice": 2, "strokes": [{"lasso": [[1, 1], [9, 1], [5, Infinity]]}]}]',
        "finite number",
    ),
    "bool_vertex": ('[{"label": 1, "slice": 2, "strokes": [{"scribble": [[true, 5]]}]}]', "finite"),
    "string_vertex": (
        '[{"label": 1, "slice": 2, "strokes": [{"scribble": [["5", 5]]}]}]',
        "finite",
    ),
    "three_value_vertex": (
        '[{"label": 1, "slice": 2, "strokes": [{"scribble": [[5, 5, 1]]}]}]',
        "each vertex must be [x, y]",
    ),
    "object_strokes": ('[{"label": 1, "slice": 2, "strokes": {"scribble": []}}]', "must be a list"),
    "number_stroke": ('[{"label": 1, "slice": 2, "strokes": [3]}]', "stroke #0 must be"),
    "empty_scribble": ('[{"label": 1, "slice": 2, "strokes": [{"scribble": []}]}]', "non-empty"),
    "scribble_and_lasso": (
        '[{"label": 1, "slice": 2, "strokes": [{"scribble": [[5, 5]], "lasso": [[5, 5]]}]}]',
        "exactly one of",
    ),
    "unknown_stroke_field": (
        '[{"label": 1, "slice": 2, "strokes": [{"scribble": [[5, 5]], "width": 3}]}]',
        "unknown fields",
    ),
    "string_negative": (
        '[{"label": 1, "slice": 2, "strokes": [{"scribble": [[5, 5]], "negative": "yes"}]}]',
        "true or false",
    ),
    "too_many_vertices": (
        json.dumps([{"label": 1, "slice": 2, "strokes": [{"scribble": [[5, 5]] * 10_001}]}]),
        "at most 10000",
    ),
    "too_many_strokes": (
        json.dumps([{"label": 1, "slice": 2, "strokes": [{"scribble": [[5, 5]]}] * 65}]),
        "at most 64",
    ),
    "too_many_scribble_points": (
        json.dumps(
            [
                {
                    "label": 1,
                    "slice": 2,
                    "points": [[5, 5]] * 250,
                    "strokes": [{"scribble": [[5, 5], [9, 9]]}] * 3,
                }
            ]
        ),
        "at most 256",
    ),
    "point_label_2": ('[{"label": 1, "slice": 2, "points": [[5, 5, 2]]}]', "1 (positive) or 0"),
    "top_level_number": ("3", "non-empty json list"),
    "empty_list": ("[]", "non-empty json list"),
    "truncated": ('[{"label": 1,', "not valid json"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_prompt_file_is_one_line(
    cli, small_ct: Path, small_weights: Path, tmp_path: Path, name: str
) -> None:
    text, fragment = HOSTILE_FILES[name]
    prompts = tmp_path / "prompts.json"
    prompts.write_text(text)
    out = tmp_path / "labels.nii.gz"
    rc, err = cli("segment", small_ct, "--prompts", prompts, "-o", out, "--model", small_weights)
    assert rc == 2 and fragment.lower() in err.lower(), err
    assert not out.exists()


def test_non_utf8_prompt_file(cli, small_ct: Path, small_weights: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.json"
    prompts.write_bytes(b'[{"label": 1, "slice": 2, "name": "\xff\xfe", "box": [10, 10, 30, 24]}]')
    rc, err = cli(
        "segment",
        small_ct,
        "--prompts",
        prompts,
        "-o",
        tmp_path / "o.nii.gz",
        "--model",
        small_weights,
    )
    assert rc == 2 and "utf-8" in err.lower()


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_prompt_path_that_is_not_a_file(cli, small_ct: Path, tmp_path: Path, kind: str) -> None:
    prompts = tmp_path / "prompts.json"
    if kind == "directory":
        prompts.mkdir()
    else:
        os.mkfifo(prompts)  # reading it would block forever
    rc, err = cli("segment", small_ct, "--prompts", prompts, "-o", tmp_path / "o.nii.gz")
    assert rc == 2 and "not a regular file" in err


def test_unreadable_prompt_file(small_ct: Path, tmp_path: Path) -> None:
    """Permission denied, as an unprivileged user sees it (root runs without DAC override)."""
    prompts = tmp_path / "prompts.json"
    prompts.write_text(f'[{{"label": 1, "slice": 2, {BOX}}}]')
    prompts.chmod(0)
    prefix = []
    if os.getuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: every file is readable")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    proc = subprocess.run(
        prefix
        + [
            sys.executable,
            "-m",
            "hrmedsegsam",
            "segment",
            str(small_ct),
            "--prompts",
            str(prompts),
            "-o",
            str(tmp_path / "o.nii.gz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot be read" in proc.stderr, proc.stderr


# ----------------------------------------------------------------------- Python API
@pytest.fixture
def predictor(box_threshold_model):
    import torch

    from hrmedsegsam.predictor import Predictor

    pred = Predictor(box_threshold_model, torch.device("cpu"))
    img = np.zeros((40, 60), np.float32)
    img[10:30, 15:45] = 1.0
    pred.set_image(img, window=(0.0, 1.0))
    return pred


def test_predict_takes_numpy_points(predictor) -> None:
    from_list = predictor.predict(points=[[30, 20]], labels=[1])
    from_array = predictor.predict(points=np.array([[30.0, 20.0]]), labels=np.array([1]))
    assert from_array.mask.any() and np.array_equal(from_array.mask, from_list.mask)
    boxed = predictor.predict(box=np.array([14, 9, 46, 31]), points=np.empty((0, 2)))
    assert boxed.mask[20, 30]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"points": [[30, 20, 0]]}, "third column"),
        ({"points": np.array([[30, 20, 1]])}, "third column"),
        ({"points": [[30, 20]] * 257}, "at most 256"),
        ({"points": [[30, np.nan]]}, "outside"),
        ({"points": [[30, 20]], "labels": [np.nan]}, "1 (positive) or 0"),
        ({"points": [[30, 20]], "labels": [0.5]}, "1 (positive) or 0"),
        ({"points": [["a", "b"]]}, "must be numbers"),
        ({"points": [[30, 20]], "labels": ["yes"]}, "must be numbers"),
        ({"box": [1, 2, "x", 4]}, "must be numbers"),
        ({"box": [1, 2, np.inf, 4]}, "outside"),
        ({"points": [[30, 20]], "mask_input": np.full((256, 256), np.nan)}, "nan"),
        ({"points": np.empty((0, 2))}, "give a box"),
    ],
)
def test_predict_rejects_hostile_prompts(predictor, kwargs, fragment: str) -> None:
    from hrmedsegsam.errors import PromptError

    with pytest.raises(PromptError) as info:
        predictor.predict(**kwargs)
    assert fragment.lower() in str(info.value).lower()
