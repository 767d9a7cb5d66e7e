"""Classes 3-6 of issue 16 for input files: wrong geometry, corrupt gzip data, declared
sizes beyond memory, non-regular files and non-UTF-8 paths. Each test writes its file."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hrmedsegsam.errors import InputError

CLI = [sys.executable, "-m", "hrmedsegsam"]


def run_cli(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a child process (for inputs that could hang or abort a process)."""
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    return subprocess.run(CLI + argv, capture_output=True, timeout=timeout)


def assert_one_line(proc: subprocess.CompletedProcess, fragment: str) -> None:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, (proc.returncode, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment.lower() in err.lower(), err


def _noise_volume(shape=(6, 40, 48), seed: int = 0) -> sitk.Image:
    arr = np.random.default_rng(seed).integers(-1000, 1000, shape).astype(np.int16)
    return sitk.GetImageFromArray(arr)


def _nifti_header(tmp: Path, dims: tuple[int, ...], pixel=sitk.sitkUInt8) -> bytes:
    """A real NIfTI-1 header (written by SimpleITK) whose dimensions are then set to ``dims``."""
    import struct

    path = tmp / "tiny.nii"
    sitk.WriteImage(sitk.Image([2, 2, 2], pixel), str(path))
    data = bytearray(path.read_bytes())
    vox_offset = int(struct.unpack("<f", data[108:112])[0])
    data[40:56] = struct.pack("<8h", len(dims), *dims, *([1] * (7 - len(dims))))
    path.unlink()
    return bytes(data[:vox_offset])


# ------------------------------------------------------------------ class 3: geometry
@pytest.mark.parametrize(
    "direction, fragment",
    [
        ((1, 0.3, 0, 0, 1, 0, 0, 0, 1), "not orthonormal"),  # sheared
        ((2, 0, 0, 0, 2, 0, 0, 0, 2), "not orthonormal"),  # scaled
        ((1, 0, 0, 0, 1, 0, 0, 0, 1.05), "not orthonormal"),  # one axis stretched by 5 %
    ],
)
def test_non_orthonormal_direction_is_refused(
    cli, tmp_path: Path, direction, fragment: str
) -> None:
    img = _noise_volume()
    img.SetDirection(direction)
    path = tmp_path / "sheared.mha"
    sitk.WriteImage(img, str(path))
    rc, err = cli("info", path)
    assert rc == 2 and fragment in err
    prompts = tmp_path / "p.json"
    prompts.write_text('[{"label": 1, "slice": 2, "box": [5, 5, 20, 20]}]')
    rc, err = cli("segment", path, "--prompts", prompts, "-o", tmp_path / "labels.nii.gz")
    assert rc == 2 and fragment in err and not (tmp_path / "labels.nii.gz").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_geometry_is_refused_by_volume(value: float) -> None:
    from hrmedsegsam.io import Volume

    arr = np.zeros((2, 4, 4), np.int16)
    with pytest.raises(InputError, match="finite"):
        Volume(arr, direction=(1, 0, 0, 0, 1, 0, 0, 0, value))
    with pytest.raises(InputError, match="finite"):
        Volume(arr, spacing=(1, value, 1))
    with pytest.raises(InputError, match="finite"):
        Volume(arr, origin=(value, 0, 0))


@pytest.mark.parametrize(
    "direction",
    [
        (-1, 0, 0, 0, 1, 0, 0, 0, 1),  # a reflection (determinant -1) is a valid grid
        tuple(
            np.round(
                sitk.VersorRigid3DTransform((0.1, 0.2, 0.3, np.sqrt(1 - 0.14))).GetMatrix(), 12
            )
        ),  # oblique
    ],
)
def test_orthonormal_directions_are_carried_exactly(tmp_path: Path, direction) -> None:
    """Labels written for an accepted image overlay it: their far corner is where the image's is."""
    from hrmedsegsam.io import read_volume, write_labels

    img = _noise_volume()
    img.SetDirection(direction)
    img.SetSpacing((0.7, 0.9, 2.5))
    img.SetOrigin((-30.0, 12.0, 200.0))
    path = tmp_path / "oblique.mha"
    sitk.WriteImage(img, str(path))
    vol = read_volume(path)
    out = write_labels(tmp_path / "labels.nii.gz", np.ones(vol.shape, np.uint8), like=vol)
    lab = sitk.ReadImage(str(out))
    corner = [n - 1 for n in img.GetSize()]
    far_image = np.array(img.TransformIndexToPhysicalPoint(corner))
    far_labels = np.array(lab.TransformIndexToPhysicalPoint(corner))
    assert np.abs(far_image - far_labels).max() < 1e-3


# ----------------------------------------------------------- class 4: corrupt gzip data
def _damaged_gzip(tmp_path: Path, how: str) -> Path:
    path = tmp_path / f"{how}.nii.gz"
    # Large enough that ITK reads it without noticing any of these (a smaller file is
    # decompressed in one go and zlib's own end-of-stream check catches some of them).
    sitk.WriteImage(_noise_volume((40, 128, 128)), str(path), useCompression=True)
    data = bytearray(path.read_bytes())
    if how == "crc":
        data[-8] ^= 0xFF  # the CRC32 of the trailer: the data decompress, the check fails
    elif how == "length":
        data[-4] ^= 0x01  # ISIZE of the trailer
    elif how == "stream":
        middle = len(data) // 2
        data[middle : middle + 8] = bytes(b ^ 0x5A for b in data[middle : middle + 8])
    elif how == "cut":
        data = data[: len(data) * 2 // 3]
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["crc", "length", "stream", "cut"])
def test_damaged_gzip_is_refused(cli, tmp_path: Path, how: str) -> None:
    path = _damaged_gzip(tmp_path, how)
    rc, err = cli("info", path)
    assert rc == 2 and "truncated or corrupt" in err


def test_damaged_gzip_is_refused_by_the_napari_reader(tmp_path: Path) -> None:
    from napari_plugin._reader import napari_get_reader

    path = _damaged_gzip(tmp_path, "crc")
    reader = napari_get_reader(str(path))
    assert reader is not None and reader(str(path)) is None


def test_intact_gzip_reads(tmp_path: Path) -> None:
    from hrmedsegsam.io import read_volume

    path = tmp_path / "ok.nii.gz"
    img = _noise_volume()
    sitk.WriteImage(img, str(path), useCompression=True)
    assert np.array_equal(read_volume(path).array, sitk.GetArrayFromImage(img))


# ------------------------------------------------- class 5: declared sizes, odd files
def test_declared_size_that_wraps_around_2_to_the_32(tmp_path: Path) -> None:
    """55 bytes declaring 16384 x 16384 x 16 voxels: 2**32 bytes, which a 32-bit trailer
    check reads as 0; it must be refused before anything of that size is allocated."""
    header = _nifti_header(tmp_path, (16384, 16384, 16))
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(header))
    assert path.stat().st_size < 100
    code = (
        "import resource, sys\n"
        "from hrmedsegsam.cli import main\n"
        f"rc = main(['info', {str(path)!r}])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stdout)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "memory" in proc.stderr or "truncated" in proc.stderr, proc.stderr
    assert int(proc.stdout.split()[-1]) < 1000, "peak memory (MB) while refusing it"


def test_declared_size_beyond_memory(cli, tmp_path: Path) -> None:
    path = tmp_path / "huge.nii"
    path.write_bytes(_nifti_header(tmp_path, (32767, 32767, 32767), sitk.sitkInt16))
    rc, err = cli("info", path)
    assert rc == 2 and "memory" in err and "32767 x 32767 x 32767" in err


def test_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "volume.nii.gz"
    os.mkfifo(fifo)
    assert_one_line(run_cli("info", fifo, timeout=60), "not a regular file")


def test_character_device_is_refused(tmp_path: Path) -> None:
    assert_one_line(run_cli("info", "/dev/zero", timeout=60), "not a regular file")


# ----------------------------------------------------------- class 6: non-UTF-8 paths
def test_non_utf8_input_path_is_one_line_not_an_abort(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/scan\xff\xfe.nii.gz"
    sitk.WriteImage(_noise_volume(), str(tmp_path / "ok.nii.gz"))
    os.rename(tmp_path / "ok.nii.gz", name)
    proc = run_cli("info", name)
    assert proc.returncode != -6, "SimpleITK aborted the process"
    assert_one_line(proc, "not valid utf-8")


def test_non_utf8_file_name_inside_a_dicom_folder(tmp_path: Path) -> None:
    """GDCM's scan of the folder would hand the name to SimpleITK, which aborts."""
    folder = tmp_path / "series"
    folder.mkdir()
    for z in range(3):
        img = sitk.GetImageFromArray(np.full((8, 8), 10 * z, np.int16))
        for tag, value in {
            "0008|0060": "CT",
            "0020|000e": "1.2.826.0.1.16",
            "0020|0013": str(z),
            "0020|0032": f"0\\0\\{z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
        }.items():
            img.SetMetaData(tag, value)
        sitk.WriteImage(img, str(folder / f"slice{z}.dcm"))
    os.rename(folder / "slice1.dcm", os.fsencode(folder) + b"/slice\xff1.dcm")
    proc = run_cli("info", folder)
    assert proc.returncode != -6, "SimpleITK aborted the process"
    assert_one_line(proc, "not valid utf-8")
    single = run_cli("info", folder / "slice0.dcm")  # the folder scan for a hint is skipped
    assert single.returncode == 0, single.stderr


def test_non_utf8_output_path_is_one_line(tmp_path: Path, small_ct: Path) -> None:
    prompts = tmp_path / "p.json"
    prompts.write_text('[{"label": 1, "slice": 2, "box": [10, 10, 30, 24]}]')
    out = os.fsencode(tmp_path) + b"/labels\xff.nii.gz"
    proc = run_cli("segment", small_ct, "--prompts", prompts, "-o", out)
    assert proc.returncode != -6, "SimpleITK aborted the process"
    assert_one_line(proc, "not valid utf-8")


def test_non_utf8_path_in_the_napari_reader(tmp_path: Path) -> None:
    """In napari an abort would take the viewer down: the reader must decline instead."""
    name = os.fsencode(tmp_path) + b"/scan\xff.nii.gz"
    sitk.WriteImage(_noise_volume(), str(tmp_path / "ok.nii.gz"))
    os.rename(tmp_path / "ok.nii.gz", name)
    code = (
        "import os\n"
        "from napari_plugin._reader import napari_get_reader\n"
        f"path = os.fsdecode({name!r})\n"
        "reader = napari_get_reader(path)\n"
        "print('declined' if reader is None or reader(path) is None else 'read')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("declined"), proc.stderr
