"""Autosave and crash recovery: a real process killed with SIGKILL after two commits loses
neither of them; edits that are not commits are saved at most every interval."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk

from hrmedsegsam.interactive import InteractiveAnnotation
from hrmedsegsam.io import read_volume
from hrmedsegsam.recovery import Autosaver, discard_recovery, find_recovery

# What an annotator's process does: open the image, commit two objects (each commit
# autosaved), then go on working until it is killed.
ANNOTATE = textwrap.dedent("""
    import sys, time
    import numpy as np
    from hrmedsegsam.interactive import InteractiveAnnotation
    from hrmedsegsam.io import read_volume
    from hrmedsegsam.recovery import Autosaver

    vol = read_volume(sys.argv[1])
    ann = InteractiveAnnotation(vol.array, (-160, 240), labels=np.zeros(vol.shape, np.int32))
    saver = Autosaver(
        vol, lambda: ann.labels, ann.session.infos, lambda: ann.window,
        background=sys.argv[3] == "background",
    )
    ann.set_box(2, 3, 4, 12, 15)
    ann.preview3d[2] = vol.array[2] > 0
    ann.accept(name="liver")
    saver.committed()
    mask = np.zeros(vol.shape, bool)
    mask[1:4, 16:22, 18:28] = True
    ann.commit_volume(mask, name="spleen", color=(10, 200, 30))
    saver.committed()
    np.save(sys.argv[2], ann.labels)
    ann.labels[0, :5, :5] = 9  # a brush stroke at once: not part of the commit's save
    saver.wait()
    print("committed", flush=True)
    while True:
        ann.labels[0, :5, :5] = 9  # an unsaved brush stroke, never committed
        time.sleep(0.05)
""")


@pytest.fixture
def ct(tmp_path):
    arr = np.random.default_rng(1).integers(-500, 500, (5, 24, 30)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.8, 2.5))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


@pytest.mark.parametrize("mode", ["foreground", "background"])
def test_two_commits_survive_sigkill(ct, tmp_path, monkeypatch, mode) -> None:
    monkeypatch.setenv("HRMEDSEGSAM_RECOVERY_DIR", str(tmp_path / "recovery"))
    expected = tmp_path / "expected.npy"
    proc = subprocess.Popen(
        [sys.executable, "-c", ANNOTATE, str(ct), str(expected), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "committed", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()

    vol = read_volume(ct)  # start again on the same image
    found = find_recovery(vol)
    assert found is not None and [o["info"].name for o in found["objects"]] == ["liver", "spleen"]
    ann = InteractiveAnnotation(vol.array, (0, 1), labels=np.zeros(vol.shape, np.int32))
    ann.open_session(found["path"], vol)
    want = np.load(expected)
    assert set(np.unique(want)) == {0, 1, 2}
    np.testing.assert_array_equal(ann.labels, want)  # both objects, voxel for voxel
    assert ann.session.info_of(2).color == (10, 200, 30)

    other = read_volume(ct)
    other.array = other.array + 1
    assert find_recovery(other) is None  # another image: nothing to offer
    discard_recovery(vol)
    assert find_recovery(vol) is None


def test_edits_save_at_most_every_interval(ct, tmp_path) -> None:
    vol = read_volume(ct)
    labels = np.zeros(vol.shape, np.int32)
    now = [100.0]
    saver = Autosaver(vol, lambda: labels, dict, interval_s=30, root=tmp_path, clock=lambda: now[0])
    labels[1, 2:4, 2:4] = 1
    assert saver.edited()  # nothing saved yet: the first edit saves
    labels[1, 5, 5] = 1
    now[0] += 10
    assert not saver.edited() and saver.dirty
    assert find_recovery(vol, root=tmp_path)["objects"][0]["id"] == 1
    now[0] += 25
    assert saver.edited() and not saver.dirty
    labels[2, 0, 0] = 3
    now[0] += 1
    assert not saver.edited()
    assert saver.flush() and not saver.flush()
    assert saver.saves == 3
    back = InteractiveAnnotation(vol.array, (0, 1), labels=np.zeros(vol.shape, np.int32))
    back.open_session(saver.path, vol)
    np.testing.assert_array_equal(back.labels, labels)


def test_background_saves_copy_collapse_and_report(ct, tmp_path) -> None:
    vol = read_volume(ct)
    labels = np.zeros(vol.shape, np.int32)
    errors = []
    saver = Autosaver(
        vol, lambda: labels, dict, root=tmp_path / "r", background=True, on_error=errors.append
    )
    for i in range(1, 6):  # saves that pile up collapse into the newest
        labels[i - 1, 0, :i] = i
        saver.committed()
    want = labels.copy()
    labels[:] = 7  # after the last save: not in it (the save wrote its copy)
    assert saver.wait(timeout=60)
    assert 1 <= saver.saves <= 5 and not errors
    back = InteractiveAnnotation(vol.array, (0, 1), labels=np.zeros(vol.shape, np.int32))
    back.open_session(saver.path, vol)
    np.testing.assert_array_equal(back.labels, want)
    saver.discard()
    assert not saver.path.exists() and find_recovery(vol, root=tmp_path / "r") is None

    # a write that fails in the background is reported, not raised
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the recovery folder should go")
    failing = Autosaver(
        vol, lambda: labels, dict, root=blocked, background=True, on_error=errors.append
    )
    failing.committed()
    assert failing.wait(timeout=60) and failing.saves == 0
    assert len(errors) == 1 and isinstance(errors[0], OSError)
