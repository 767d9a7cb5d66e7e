"""``train validate`` and the split: selection rule, validation slab, fidelity (R^2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hrmedsegsam.errors import InputError

torch = pytest.importorskip("torch")


def test_selection_rule() -> None:
    from hrmedsegsam.training.validate import selection_rule

    earlier = {"box": 0.84, "point": 0.81}
    assert selection_rule(earlier, {"box": 0.835, "point": 0.805})  # within the tolerance
    assert selection_rule(earlier, {"box": 0.90, "point": 0.90})
    assert not selection_rule(earlier, {"box": 0.82, "point": 0.85})  # box more than 0.01 below
    assert not selection_rule(earlier, {"box": 0.86, "point": 0.79})  # point more than 0.01 below


def test_split_keeps_heldout_and_validation_out_of_training(shared_data: Path) -> None:
    from hrmedsegsam.training.data import (
        HOLDOUT,
        VALIDATION_2D,
        VALIDATION_MARGIN,
        VALIDATION_SLICES,
        VALIDATION_VOLUME,
        frame_plan,
    )

    plan = frame_plan(shared_data, seed=0)
    assert len(plan) >= 2000
    volumes = {s.volume for s in plan}
    assert (
        not volumes & set(HOLDOUT)
        and VALIDATION_2D not in volumes
        and "ct_thorax_small" not in volumes
    )
    slab = [s.index for s in plan if s.volume == VALIDATION_VOLUME and s.axis == 0]
    assert slab and max(slab) < VALIDATION_SLICES.start - VALIDATION_MARGIN
    # every full-size thorax slice is there, under several windows
    thorax = [s for s in plan if s.volume == "ct_thorax_512" and s.axis == 0]
    assert len({s.index for s in thorax}) == 141 and len({s.window for s in thorax}) >= 3
    assert frame_plan(shared_data, seed=0) == plan  # deterministic: a cache can resume


def test_validation_reformats_lose_the_slab(shared_data: Path) -> None:
    from hrmedsegsam.training.data import (
        VALIDATION_MARGIN,
        VALIDATION_SLICES,
        VALIDATION_VOLUME,
        FrameSpec,
        VolumeCache,
        make_sample,
    )

    s = make_sample(FrameSpec(VALIDATION_VOLUME, 1, 50, (-160.0, 240.0)), VolumeCache(shared_data))
    assert s.image.shape[0] == VALIDATION_SLICES.start - VALIDATION_MARGIN


def test_r_squared() -> None:
    from hrmedsegsam.training.validate import r_squared

    rng = np.random.default_rng(0)
    t = rng.normal(size=(6, 4, 8, 8))
    assert r_squared(t, t) == pytest.approx(1.0)
    assert r_squared(np.broadcast_to(t.mean(0), t.shape), t) == pytest.approx(0.0)
    noisy = t + rng.normal(scale=0.5, size=t.shape)
    assert 0.6 < r_squared(noisy, t) < 0.9
    # Against a baseline farther from the frames than their own mean, the same error
    # explains a larger share.
    far = t.mean(0) + 1.0
    assert r_squared(noisy, t, far) > r_squared(noisy, t)
    assert r_squared(np.broadcast_to(far, t.shape), t, far) == pytest.approx(0.0)


def test_teacher_mean_of_a_cache(tmp_path: Path) -> None:
    from hrmedsegsam.errors import InputError
    from hrmedsegsam.training.validate import teacher_mean

    with pytest.raises(InputError, match="no teacher embeddings"):
        teacher_mean(tmp_path)
    (tmp_path / "teacher").mkdir()
    embs = [np.full((2, 3, 3), v, np.float16) for v in (1.0, 2.0, 6.0)]
    for i, e in enumerate(embs):
        np.save(tmp_path / "teacher" / f"{i:05d}.npy", e)
    m = teacher_mean(tmp_path)
    assert m.shape == (2, 3, 3) and m.dtype == np.float32
    assert np.allclose(m, 3.0)
    assert teacher_mean(tmp_path, limit=2).shape == (2, 3, 3)


def test_clinical_copy_keeps_the_physical_extent(tmp_path: Path) -> None:
    import SimpleITK as sitk

    from hrmedsegsam.training.validate import clinical_copy

    arr = np.zeros((3, 20, 30), np.int16)
    arr[:, 5:10, 10:20] = 1
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((3.0, 3.0, 2.0))
    img.SetOrigin((10.0, -5.0, 7.0))
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(img, str(tmp_path / "i.nii.gz"))
    sitk.WriteImage(img, str(tmp_path / "l.nii.gz"))
    out = tmp_path / "out"
    out.mkdir()
    ip, lp = clinical_copy(tmp_path / "i.nii.gz", tmp_path / "l.nii.gz", out, spacing=1.0)
    res, lab = sitk.ReadImage(str(ip)), sitk.ReadImage(str(lp))
    assert res.GetSize() == (90, 60, 3) and res.GetSpacing() == pytest.approx((1.0, 1.0, 2.0))
    # the labelled block keeps its physical place: 3x the pixels, same corners in mm
    la = sitk.GetArrayFromImage(lab)
    ys, xs = np.nonzero(la[1])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (15, 29, 30, 59)


def test_evaluate_rejects_slices_outside_the_volume(shared_data: Path) -> None:
    from hrmedsegsam.training.evaluate import evaluate

    folder = shared_data / "ct_body_3mm"
    with pytest.raises(InputError, match="slice indices"):
        evaluate(
            folder / "image.nii.gz",
            folder / "labels_spine.nii.gz",
            models=("hrmedsegsam",),
            slices=[0, 500],
            progress=False,
        )


def test_validate_cli_rejects_missing_weights(tmp_path: Path) -> None:
    from hrmedsegsam.cli import main

    assert main(["train", "validate", "--models", str(tmp_path / "nope.pt")]) != 0


def test_validate_cli_rejects_contradicting_flags() -> None:
    from hrmedsegsam.cli import main

    assert (
        main(["train", "validate", "--models", "hrmedsegsam", "--fidelity-only", "--no-fidelity"])
        == 2
    )
