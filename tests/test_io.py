"""hrmedsegsam.io: reading volumes with their geometry, writing and resampling labels.

Every test writes real files with SimpleITK into tmp_path (no mocks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from hrmedsegsam.errors import InputError, OutputExistsError
from hrmedsegsam.io import (
    DicomSeries,
    Volume,
    describe,
    list_dicom_series,
    read_image,
    read_volume,
    resample_labels_to,
    write_labels,
)

ATOL = 1e-5  # NIfTI stores geometry as float32


# --------------------------------------------------------------------------- helpers


def rotation(axis, angle: float) -> np.ndarray:
    """3x3 rotation about ``axis`` by ``angle`` radians (Rodrigues)."""
    k = np.asarray(axis, dtype=float)
    k /= np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


OBLIQUE = tuple(rotation((1, 2, 3), 0.4).ravel())


def make_image(array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    return image


def ramp(shape=(4, 5, 6), dtype=np.int16, offset=-50):
    return (np.arange(np.prod(shape)).reshape(shape) + offset).astype(dtype)


def write_dicom_series(
    folder, image, series_uid, modality="CT", description="", prefix="img", positions=None
):
    """One file per z slice, with the tags a scanner would write."""
    folder.mkdir(parents=True, exist_ok=True)
    d = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        if positions is not None:
            position = positions[k]
        tags = {
            "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
            "0008|0060": modality,
            "0008|103e": description,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.99.1",
            "0020|000e": series_uid,
            "0020|0052": series_uid + ".0",  # frame of reference
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(slice_)


def assert_geometry(volume: Volume, image: sitk.Image, atol: float = ATOL) -> None:
    assert volume.size_xyz == tuple(image.GetSize())
    np.testing.assert_allclose(volume.spacing, image.GetSpacing(), atol=atol)
    np.testing.assert_allclose(volume.origin, image.GetOrigin(), atol=atol)
    np.testing.assert_allclose(volume.direction, image.GetDirection(), atol=atol)


def assert_one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert message.endswith(".")
    for fragment in fragments:
        assert fragment in message, message


# --------------------------------------------------------------------------- files


def test_oblique_nifti_round_trip(tmp_path):
    array = ramp((4, 5, 6))
    image = make_image(array, (0.8, 1.1, 2.5), (10.0, -20.5, 33.0), OBLIQUE)
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(image, str(path))

    vol = read_volume(path)

    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, array)
    assert vol.shape == (4, 5, 6)
    assert_geometry(vol, image)
    assert vol.is_oblique
    assert len(vol.orientation) == 3 and set(vol.orientation) <= set("LRAPSI")
    np.testing.assert_allclose(vol.direction_matrix, np.reshape(OBLIQUE, (3, 3)), atol=ATOL)
    assert vol.spacing_zyx == pytest.approx((2.5, 1.1, 0.8), abs=ATOL)
    assert vol.origin_zyx == pytest.approx((33.0, -20.5, 10.0), abs=ATOL)
    assert vol.path == str(path) and vol.modality == "" and vol.series_uid is None

    # affine_zyx maps (z, y, x) indices to (z, y, x)-ordered physical mm
    affine = vol.affine_zyx()
    for z, y, x in [(0, 0, 0), (3, 1, 5), (2, 4, 0)]:
        expected = image.TransformIndexToPhysicalPoint((x, y, z))[::-1]
        np.testing.assert_allclose((affine @ [z, y, x, 1])[:3], expected, atol=1e-4)
        np.testing.assert_allclose(vol.index_to_physical([z, y, x]), expected[::-1], atol=1e-4)

    # to_sitk / reference_image carry the same grid
    assert_geometry(vol, vol.to_sitk(), atol=0)
    assert_geometry(vol, vol.reference_image(), atol=0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(vol.to_sitk()), array)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii"])
def test_anisotropic_spacing_other_formats(tmp_path, suffix):
    array = np.random.default_rng(0).normal(size=(3, 7, 9)).astype(np.float32)
    image = make_image(array, (0.5, 0.7, 3.0), (-1.0, 2.0, -3.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(image, str(path))

    vol = read_volume(path)

    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, array)
    assert_geometry(vol, image)
    assert vol.spacing_zyx == pytest.approx((3.0, 0.7, 0.5))
    assert vol.orientation == "RAS"
    assert not vol.is_oblique


def test_orientation_codes():
    def vol(direction):
        return Volume(np.zeros((2, 2, 2), np.uint8), direction=direction)

    assert vol((1, 0, 0, 0, 1, 0, 0, 0, 1)).orientation == "LPS"
    assert vol((-1, 0, 0, 0, -1, 0, 0, 0, 1)).orientation == "RAS"
    coronal = vol((1, 0, 0, 0, 0, 1, 0, -1, 0))  # a signed permutation: not oblique
    assert not coronal.is_oblique and len(coronal.orientation) == 3
    assert vol(OBLIQUE).is_oblique


def test_png_is_a_one_slice_volume(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, size=(12, 17), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "grey.png"))

    vol = read_volume(tmp_path / "grey.png")

    assert vol.shape == (1, 12, 17) and vol.array.dtype == np.uint8
    np.testing.assert_array_equal(vol.array[0], grey)
    assert vol.spacing[2] == 1.0 and vol.notes == []
    assert read_image(tmp_path / "grey.png").GetDimension() == 3


def test_rgb_photo_becomes_grey_with_a_note(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red, and red + green on the right half
    rgb[:, 3:, 1] = 90
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "photo.png"))

    vol = read_volume(tmp_path / "photo.png")

    assert vol.shape == (1, 4, 6) and vol.array.dtype == np.uint8
    expected = np.round(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1].astype(float))
    np.testing.assert_array_equal(vol.array[0], expected)
    assert len(vol.notes) == 1 and "grey" in vol.notes[0]


# --------------------------------------------------------------------------- DICOM


def test_dicom_series_round_trip(tmp_path):
    array = ramp((5, 6, 7), offset=-1000)
    image = make_image(array, (0.7, 0.8, 2.5), (10.0, -20.0, 30.0), OBLIQUE)
    write_dicom_series(tmp_path / "ct", image, "1.2.3.4.5", "CT", "Abdomen 2.5mm")

    vol = read_volume(tmp_path / "ct")

    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, array)
    assert_geometry(vol, image, atol=1e-4)
    assert vol.is_oblique
    assert (vol.modality, vol.series_uid, vol.series_description) == (
        "CT",
        "1.2.3.4.5",
        "Abdomen 2.5mm",
    )
    assert vol.notes == []
    info = describe(vol)
    assert info["modality"] == "CT" and info["size_xyz"] == [7, 6, 5]


def test_two_series_in_one_folder(tmp_path):
    folder = tmp_path / "mixed"
    big = make_image(ramp((5, 4, 4)), (1.0, 1.0, 2.0))
    small = make_image(ramp((3, 4, 4), offset=100), (1.0, 1.0, 3.0), (0.0, 0.0, 50.0))
    write_dicom_series(folder, big, "1.2.3.100", "CT", "big", prefix="a")
    write_dicom_series(folder, small, "1.2.3.200", "MR", "small", prefix="b")

    series = list_dicom_series(folder)
    assert [s.uid for s in series] == ["1.2.3.100", "1.2.3.200"]
    assert isinstance(series[0], DicomSeries)
    assert (series[0].n_files, series[0].modality, series[0].description) == (5, "CT", "big")
    assert (series[1].n_files, series[1].modality) == (3, "MR")

    vol = read_volume(folder)
    assert vol.shape == (5, 4, 4) and vol.series_uid == "1.2.3.100"
    assert len(vol.notes) == 1
    assert "2 DICOM series" in vol.notes[0] and "1.2.3.100" in vol.notes[0]
    assert "1.2.3.200" in vol.notes[0]

    other = read_volume(folder, series_uid="1.2.3.200")
    assert other.shape == (3, 4, 4) and other.modality == "MR" and other.notes == []
    np.testing.assert_array_equal(other.array, ramp((3, 4, 4), offset=100))
    assert other.origin[2] == pytest.approx(50.0)

    with pytest.raises(InputError) as exc:
        read_volume(folder, series_uid="9.9.9")
    assert_one_line(exc, "9.9.9", "1.2.3.100", "1.2.3.200", str(folder))


def test_single_dicom_files(tmp_path):
    image = make_image(ramp((3, 4, 5)), (0.5, 0.6, 4.0), (1.0, 2.0, 3.0))
    write_dicom_series(tmp_path / "s", image, "1.2.3.7", "MR", "t1")

    one = read_volume(tmp_path / "s" / "img001.dcm")
    assert one.shape == (1, 4, 5)
    np.testing.assert_array_equal(one.array[0], ramp((3, 4, 5))[1])
    assert (one.modality, one.series_uid, one.series_description) == ("MR", "1.2.3.7", "t1")
    assert one.origin == pytest.approx((1.0, 2.0, 7.0))
    assert len(one.notes) == 1 and "one slice of DICOM series 1.2.3.7" in one.notes[0]

    # a multi-frame file (GDCM writes a 3D image as one file)
    multi = make_image(ramp((4, 5, 6)), (0.7, 0.8, 2.5), (10.0, -20.0, 30.0))
    multi.SetMetaData("0008|0060", "CT")
    sitk.WriteImage(multi, str(tmp_path / "multi.dcm"))
    vol = read_volume(tmp_path / "multi.dcm")
    assert vol.shape == (4, 5, 6) and vol.modality == "CT"
    np.testing.assert_array_equal(vol.array, ramp((4, 5, 6)))
    assert_geometry(vol, multi, atol=1e-4)


def test_uneven_slices_get_a_note(tmp_path):
    image = make_image(ramp((4, 3, 3)), (1.0, 1.0, 2.5))
    positions = [(0.0, 0.0, z) for z in (0.0, 2.5, 5.0, 10.0)]  # one slice missing
    write_dicom_series(tmp_path / "gap", image, "1.2.3.8", positions=positions)

    vol = read_volume(tmp_path / "gap")

    assert vol.shape == (4, 3, 3)
    assert any("not uniform" in note for note in vol.notes)


# --------------------------------------------------------------------------- errors


def test_missing_path(tmp_path):
    with pytest.raises(InputError) as exc:
        read_volume(tmp_path / "nope.nii.gz")
    assert_one_line(exc, str(tmp_path / "nope.nii.gz"), "does not exist")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(InputError) as exc:
        read_volume(path)
    assert_one_line(exc, str(path), "is not a readable image (")


def test_truncated_nifti_is_refused(tmp_path):
    image = make_image(np.random.default_rng(2).random((8, 20, 30)).astype(np.float32))
    for name in ("whole.nii", "whole.nii.gz"):
        sitk.WriteImage(image, str(tmp_path / name))
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError) as exc:
            read_volume(cut)
        assert_one_line(exc, str(cut), "truncated")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "readme.txt").write_text("not dicom")
    sitk.WriteImage(make_image(ramp((2, 3, 3))), str(tmp_path / "scan.nii.gz"))
    with pytest.raises(InputError) as exc:
        read_volume(tmp_path)
    assert_one_line(exc, f"no DICOM series found in {tmp_path}", "scan.nii.gz")
    assert list_dicom_series(tmp_path) == []


def test_4d_volume_is_refused(tmp_path):
    frames = [make_image(ramp((3, 4, 5))) for _ in range(2)]
    path = tmp_path / "cine.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(frames), str(path))
    with pytest.raises(InputError) as exc:
        read_volume(path)
    assert_one_line(exc, str(path), "4 dimensions (x=5, y=4, z=3, t=2)", "3D scalar volume")


def test_single_timepoint_4d_is_accepted(tmp_path):
    path = tmp_path / "t1.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([make_image(ramp((3, 4, 5)))]), str(path))
    np.testing.assert_array_equal(read_volume(path).array, ramp((3, 4, 5)))


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_rgb_volume_is_refused(tmp_path, suffix):
    path = tmp_path / f"rgb{suffix}"
    rgb = np.zeros((3, 4, 5, 3), np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    with pytest.raises(InputError) as exc:
        read_volume(path)
    assert_one_line(exc, str(path), "3 components per voxel (RGB)", "scalar volume is needed")


# --------------------------------------------------------------------------- labels


def test_resample_flipped_axes_by_physical_space():
    """Labels stored with direction diag(-1,-1,1) land on the same physical voxels."""
    shape = (3, 4, 5)
    target = Volume(np.zeros(shape, np.int16), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
    expected = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    # Same physical grid seen from the opposite corner: index 0 of x/y is the far end.
    flipped = make_image(
        np.ascontiguousarray(expected[:, ::-1, ::-1]),
        spacing=(1.0, 1.0, 2.0),
        origin=(4.0, 3.0, 0.0),
        direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1),
    )
    out = resample_labels_to(flipped, target)
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, expected)
    # a raw-index reading would have been wrong
    assert not np.array_equal(sitk.GetArrayFromImage(flipped), expected)


def test_resample_different_grid_nearest_and_outside_zero(tmp_path):
    target = Volume(np.zeros((6, 8, 10), np.int16), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    rng = np.random.default_rng(3)
    coarse = rng.integers(1, 9, size=(3, 3, 4)).astype(np.uint16)
    l_spacing, l_origin = np.array([2.0, 2.0, 2.0]), np.array([0.4, 0.4, 0.4])
    labels = make_image(coarse, tuple(l_spacing), tuple(l_origin))
    path = tmp_path / "coarse.nii.gz"
    sitk.WriteImage(labels, str(path))

    out = resample_labels_to(path, target)

    # expected by hand: nearest label voxel of every target voxel centre, 0 outside
    z, y, x = np.meshgrid(*(np.arange(n) for n in target.shape), indexing="ij")
    phys_xyz = np.stack([x, y, z], axis=-1).astype(float)
    idx_xyz = np.floor((phys_xyz - l_origin) / l_spacing + 0.5).astype(int)
    size_xyz = np.array(coarse.shape[::-1])
    inside = np.all((idx_xyz >= 0) & (idx_xyz < size_xyz), axis=-1)
    expected = np.zeros(target.shape, np.uint16)
    ix, iy, iz = (idx_xyz[..., i][inside] for i in range(3))
    expected[inside] = coarse[iz, iy, ix]

    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, expected)
    assert (out == 0).any() and (out > 0).any()


def test_resample_accepts_volume_and_float_labels():
    target = Volume(np.zeros((2, 3, 4), np.int16))
    labels = Volume(np.full((2, 3, 4), 2.0, np.float32))
    out = resample_labels_to(labels, target)
    assert out.dtype == np.uint8 and (out == 2).all()
    with pytest.raises(InputError):
        resample_labels_to(Volume(np.full((2, 3, 4), 0.5, np.float32)), target)


def test_resample_refuses_colour_labels(tmp_path):
    path = tmp_path / "labels.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True), str(path))
    with pytest.raises(InputError) as exc:
        resample_labels_to(path, Volume(np.zeros((1, 4, 5), np.uint8)))
    assert_one_line(exc, str(path), "3 components per voxel (RGB)", "label map")


def test_write_labels_geometry_and_dtype(tmp_path):
    src = make_image(ramp((4, 5, 6)), (0.8, 1.1, 2.5), (10.0, -20.5, 33.0), OBLIQUE)
    sitk.WriteImage(src, str(tmp_path / "image.nii.gz"))
    vol = read_volume(tmp_path / "image.nii.gz")
    labels = (vol.array > 0).astype(np.int64) * 3

    out = write_labels(tmp_path / "labels.nii.gz", labels, like=vol)

    assert out == tmp_path / "labels.nii.gz"
    written = sitk.ReadImage(str(out))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert_geometry(vol, written)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), labels)
    # read back as a volume and resampled onto the image: identical
    np.testing.assert_array_equal(resample_labels_to(out, vol), labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii.gz", "labels.nii.gz"]


@pytest.mark.parametrize(
    ("value", "pixel"), [(300, sitk.sitkUInt16), (-1, sitk.sitkInt32), (True, sitk.sitkUInt8)]
)
def test_write_labels_picks_integer_type(tmp_path, value, pixel):
    vol = Volume(np.zeros((2, 3, 4), np.int16), spacing=(0.5, 0.5, 2.0))
    labels = np.zeros(vol.shape, dtype=np.asarray(value).dtype)
    labels[1, 2, 3] = value
    out = write_labels(tmp_path / "l.nii", labels, like=vol)
    written = sitk.ReadImage(str(out))
    assert written.GetPixelID() == pixel
    assert sitk.GetArrayFromImage(written)[1, 2, 3] == int(value)


def test_write_labels_refuses_to_overwrite(tmp_path):
    vol = Volume(np.zeros((2, 3, 4), np.int16))
    path = tmp_path / "out.nii.gz"
    write_labels(path, np.ones(vol.shape, np.uint8), like=vol)
    with pytest.raises(OutputExistsError) as exc:
        write_labels(path, np.zeros(vol.shape, np.uint8), like=vol)
    assert_one_line(exc, str(path), "exists; pass overwrite (--overwrite) to replace it")
    assert (sitk.GetArrayFromImage(sitk.ReadImage(str(path))) == 1).all()  # untouched

    write_labels(path, np.full(vol.shape, 2, np.uint8), like=vol, overwrite=True)
    assert (sitk.GetArrayFromImage(sitk.ReadImage(str(path))) == 2).all()
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]  # no temp files left


def test_write_labels_bad_requests(tmp_path):
    vol = Volume(np.zeros((2, 3, 4), np.int16))
    labels = np.zeros(vol.shape, np.uint8)
    with pytest.raises(InputError) as exc:
        write_labels(tmp_path / "out.png", labels, like=vol)
    assert_one_line(exc, "out.png", ".nii or .nii.gz")
    with pytest.raises(InputError) as exc:
        write_labels(tmp_path / "missing" / "out.nii.gz", labels, like=vol)
    assert_one_line(exc, str(tmp_path / "missing"), "does not exist")
    with pytest.raises(InputError) as exc:
        write_labels(tmp_path / "out.nii.gz", np.zeros((2, 4, 3), np.uint8), like=vol)
    assert_one_line(exc, "(2, 4, 3)", "(2, 3, 4)")
    with pytest.raises(InputError):
        write_labels(tmp_path / "out.nii.gz", np.full(vol.shape, 0.5), like=vol)
    assert list(tmp_path.iterdir()) == []


def test_write_labels_one_slice_volume(tmp_path):
    vol = Volume(np.zeros((1, 3, 4), np.uint8), spacing=(0.5, 0.5, 3.0), origin=(0, 0, -42.0))
    out = write_labels(tmp_path / "slice.nii.gz", np.eye(3, 4, dtype=np.uint8), like=vol)
    back = read_volume(out)
    assert back.shape == (1, 3, 4)
    assert back.origin[2] == pytest.approx(-42.0) and back.spacing[2] == pytest.approx(3.0)


def test_describe_is_json_ready(tmp_path):
    vol = Volume(ramp((2, 3, 4)), spacing=(0.5, 0.6, 2.0), path="x.nii.gz", notes=["hi"])
    info = describe(vol)
    json.dumps(info)
    assert info["size_xyz"] == [4, 3, 2] and info["spacing_xyz"] == [0.5, 0.6, 2.0]
    assert info["value_range"] == [-50, -27] and info["dtype"] == "int16"
    assert info["orientation"] == "LPS" and info["oblique"] is False
    assert info["notes"] == ["hi"] and info["path"] == "x.nii.gz"


def test_import_stays_light():
    code = (
        "import hrmedsegsam, hrmedsegsam.io, hrmedsegsam.intensity, sys; "
        "assert 'torch' not in sys.modules and 'napari' not in sys.modules"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(
                None,
                [
                    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    os.environ.get("PYTHONPATH", ""),
                ],
            )
        ),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- real data

# Each case: image file, expected orientation, and label checks
# (label file, voxel selection, lowest and highest plausible mean of the image inside it).
# The ranges fail when labels land on the wrong voxels (e.g. flipped axes): vertebrae are
# bone (> 150 HU), lungs are air, contrast-filled aorta/heart are bright.
VERTEBRAE_T11_L2 = [30, 31, 32, 33]
LUNG_LOBES = [10, 11, 12, 13, 14]
REAL_CASES = {
    "ct_thorax_small": (
        "image.nii.gz",
        "RAS",
        [
            ("labels.nii.gz", VERTEBRAE_T11_L2, 150, 400),
            ("labels.nii.gz", LUNG_LOBES, -1000, -500),
        ],
    ),
    "ct_body_3mm": ("image.nii.gz", "RAS", [("labels_spine.nii.gz", "nonzero", 150, 400)]),
    "ct_aorta_1p5mm": (
        "image.nii.gz",
        "LPS",
        [
            ("masks/aorta.nii.gz", "nonzero", 200, 600),
            ("masks/vertebrae_T12.nii.gz", "nonzero", 150, 500),
        ],
    ),
    # heart.nii.gz is larger than the crop and on another grid
    "ct_pulmonary_1p5mm": ("image.nii.gz", "LPS", [("masks/heart.nii.gz", "nonzero", 200, 600)]),
    # T1: white matter is brighter than grey matter (probability maps 0-255)
    "mr_brain_mni152": (
        "t1.nii.gz",
        "RAS",
        [
            ("gm_probability.nii.gz", "over127", 140, 190),
            ("wm_probability.nii.gz", "over127", 190, 240),
        ],
    ),
}


def _select(labels: np.ndarray, selection) -> np.ndarray:
    if selection == "nonzero":
        return labels > 0
    if selection == "over127":
        return labels > 127
    return np.isin(labels, selection)


@pytest.mark.parametrize("case", sorted(REAL_CASES))
def test_real_volumes(shared_data, case):
    image_name, orientation, checks = REAL_CASES[case]
    folder = shared_data / case
    if not (folder / image_name).exists():
        pytest.skip(f"{folder / image_name} not present")
    vol = read_volume(folder / image_name)
    assert vol.array.ndim == 3 and min(vol.shape) > 1
    assert vol.orientation == orientation and not vol.is_oblique
    assert vol.notes == []
    for name, selection, lo, hi in checks:
        labels = resample_labels_to(folder / name, vol)
        assert labels.shape == vol.shape and labels.dtype.kind in "iu"
        mask = _select(labels, selection)
        assert mask.any(), f"{name} has no overlap with {image_name}"
        mean = float(vol.array[mask].mean())
        assert lo <= mean <= hi, f"{name} {selection}: mean {mean:.0f} outside {lo}..{hi}"
