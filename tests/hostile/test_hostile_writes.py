"""Class 1 of issue 16 (and the too-long names of class 6): a labels file is written,
verified, then renamed; a full disk or a signal never leaves a truncated file under the
user's name, never loses the previous file and never leaves a temporary file behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hrmedsegsam.errors import InputError


def _volume_file(folder: Path, shape: tuple[int, int, int]) -> Path:
    path = folder / "image.nii"
    sitk.WriteImage(sitk.Image(list(shape[::-1]), sitk.sitkInt16), str(path))
    return path


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".hrmedsegsam-"))


# A child process: writes a previous labels file, then tries to replace it with labels of
# incompressible noise (about 1.2 MB whatever the compression) under the given limits.
CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    from hrmedsegsam.errors import HRMedSegSAMError
    from hrmedsegsam.io import read_volume, write_labels

    image, out, suffix, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    # As in a terminal session: a test run under nohup would hand its ignored SIGHUP down,
    # and the write rightly keeps an ignored signal ignored.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    vol = read_volume(image)
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    noise = np.random.default_rng(0).integers(0, 255, vol.shape).astype(np.uint8)
    print("writing", flush=True)
    try:
        write_labels(out, noise, like=vol, overwrite=True)
    except HRMedSegSAMError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    print("wrote", flush=True)
    """
)


def _child(image: Path, out: Path, limit: int = 0, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(image), str(out), "".join(out.suffixes), str(limit)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _previous(out: Path, image: Path) -> bytes:
    from hrmedsegsam.io import read_volume, write_labels

    vol = read_volume(image)
    labels = np.zeros(vol.shape, np.uint8)
    labels[0, :4, :4] = 7
    write_labels(out, labels, like=vol)
    return out.read_bytes()


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_file_size_limit_keeps_the_previous_file(tmp_path: Path, suffix: str) -> None:
    """The disk fills up at 256 KiB (RLIMIT_FSIZE, which any user may lower)."""
    image = _volume_file(tmp_path, (20, 256, 256))
    out = tmp_path / f"labels{suffix}"
    before = _previous(out, image)
    proc = _child(image, out, limit=256 << 10)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert stderr.count("\n") == 1 and "could not write" in stderr, stderr
    assert out.read_bytes() == before
    assert _temporaries(tmp_path) == []


@pytest.fixture
def tiny_filesystem(tmp_path: Path):
    """A real 1 MiB tmpfs (needs the right to mount; skipped where that is not granted)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_keeps_the_previous_file(tmp_path: Path, tiny_filesystem: Path) -> None:
    image = _volume_file(tmp_path, (20, 256, 256))
    out = tiny_filesystem / "labels.nii.gz"
    before = _previous(out, image)
    proc = _child(image, out)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert stderr.count("\n") == 1 and "could not write" in stderr, stderr
    assert out.read_bytes() == before
    assert _temporaries(tiny_filesystem) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_during_a_write_removes_the_temporary_file(tmp_path: Path, signum: int) -> None:
    image = _volume_file(tmp_path, (400, 256, 256))  # 26 MB of noise: about a second of gzip
    out = tmp_path / "labels.nii.gz"
    before = _previous(out, image)
    proc = _child(image, out)
    assert proc.stdout.readline().strip() == "writing"
    deadline = time.monotonic() + 60
    while not _temporaries(tmp_path):
        assert proc.poll() is None and time.monotonic() < deadline, (
            "the write finished before it was seen"
        )
        time.sleep(0.01)
    proc.send_signal(signum)
    proc.communicate(timeout=120)
    assert proc.returncode == -signum
    assert _temporaries(tmp_path) == []
    assert out.read_bytes() == before


def test_signal_handlers_are_restored_after_a_write(tmp_path: Path) -> None:
    from hrmedsegsam.io import read_volume, write_labels

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    vol = read_volume(_volume_file(tmp_path, (2, 8, 8)))
    write_labels(tmp_path / "l.nii.gz", np.zeros(vol.shape, np.uint8), like=vol)
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize("length", [250, 300, 4000])
def test_output_name_longer_than_the_file_system_allows(cli, tmp_path: Path, length: int) -> None:
    from hrmedsegsam.io import check_label_output

    out = tmp_path / ("x" * (length - len(".nii.gz")) + ".nii.gz")
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    if length <= limit:  # allowed: the temporary name must not be what overflows
        from hrmedsegsam.io import read_volume, write_labels

        vol = read_volume(_volume_file(tmp_path, (2, 8, 8)))
        assert write_labels(out, np.zeros(vol.shape, np.uint8), like=vol).exists()
        return
    with pytest.raises(InputError, match="file name has"):
        check_label_output(out)
    rc, err = cli("segment", tmp_path / "missing.nii", "--prompts", tmp_path / "p.json", "-o", out)
    assert rc == 2 and "file name has" in err
