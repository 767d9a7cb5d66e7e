"""DICOM SEG out and in (highdicom) on real DICOM series written by SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("highdicom")

from test_io import OBLIQUE, make_image, ramp, write_dicom_series  # noqa: E402

from hrmedsegsam.errors import InputError, OutputExistsError  # noqa: E402
from hrmedsegsam.io import read_volume  # noqa: E402
from hrmedsegsam.io.seg import Segment, read_seg, write_seg  # noqa: E402


@pytest.mark.parametrize("direction", [None, OBLIQUE], ids=["axial", "oblique"])
def test_seg_round_trip_lands_on_the_source_frames(tmp_path, direction) -> None:
    import highdicom as hd
    import pydicom

    image = make_image(
        ramp((6, 20, 24), offset=-500), (0.8, 0.7, 2.0), (5.0, -3.0, 11.0), direction
    )
    write_dicom_series(tmp_path / "ct", image, "1.2.826.0.1.3680043.2.1125.7.1")
    vol = read_volume(tmp_path / "ct")
    labels = np.zeros(vol.array.shape, np.uint16)
    labels[1:4, 5:12, 6:15] = 3
    labels[4, 2:6, 2:20] = 7  # one slice only, asymmetric so a flip would show
    out = write_seg(
        tmp_path / "seg.dcm",
        labels,
        vol,
        [Segment(3, "liver", (200, 40, 40)), Segment(7, "spleen")],
    )

    # pydicom and highdicom read it; each segment's frames reference the right source slices
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and len(ds.SegmentSequence) == 2
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver", "spleen"]
    seg = hd.seg.segread(str(out))
    files = sorted((tmp_path / "ct").glob("*.dcm"))
    by_slice = {
        str(pydicom.dcmread(f).SOPInstanceUID): int(pydicom.dcmread(f).InstanceNumber) - 1
        for f in files
    }
    spleen_frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(by_slice), segment_numbers=[2], ignore_spatial_locations=True
    )
    hit = [by_slice[u] for u, f in zip(by_slice, spleen_frames, strict=True) if f.any()]
    assert hit == [4]

    back, segments = read_seg(out, vol)
    np.testing.assert_array_equal(back, labels)
    assert {(s.label_id, s.name) for s in segments} == {(3, "liver"), (7, "spleen")}
    liver = next(s for s in segments if s.label_id == 3)
    assert (
        np.abs(np.subtract(liver.color, (200, 40, 40))).max() <= 2
    )  # colour survives the CIELab round trip


def test_seg_needs_a_dicom_source_and_never_overwrites(tmp_path) -> None:
    import SimpleITK as sitk

    image = make_image(ramp((3, 8, 8)))
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    nifti = read_volume(tmp_path / "a.nii.gz")
    labels = np.ones(nifti.array.shape, np.uint8)
    with pytest.raises(InputError, match="DICOM series"):
        write_seg(tmp_path / "s.dcm", labels, nifti)

    write_dicom_series(tmp_path / "ct", image, "1.2.826.0.1.3680043.2.1125.7.2")
    vol = read_volume(tmp_path / "ct")
    (tmp_path / "s.dcm").write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        write_seg(tmp_path / "s.dcm", labels, vol)
    assert (tmp_path / "s.dcm").read_bytes() == b"keep me"
    with pytest.raises(InputError, match="not a readable DICOM SEG"):
        read_seg(tmp_path / "s.dcm", vol)
    with pytest.raises(InputError, match="no labelled voxels"):
        write_seg(tmp_path / "t.dcm", np.zeros_like(labels), vol)


def test_seg_of_another_series_is_refused(tmp_path) -> None:
    a = make_image(ramp((3, 8, 8)))
    write_dicom_series(tmp_path / "a", a, "1.2.826.0.1.3680043.2.1125.7.3")
    write_dicom_series(tmp_path / "b", a, "1.2.826.0.1.3680043.2.1125.7.4", prefix="other")
    va, vb = read_volume(tmp_path / "a"), read_volume(tmp_path / "b")
    labels = np.zeros(va.array.shape, np.uint8)
    labels[1, 2:5, 2:5] = 1
    out = write_seg(tmp_path / "s.dcm", labels, va)
    with pytest.raises(InputError, match="another DICOM series"):
        read_seg(out, vb)


def test_seg_opens_as_an_annotation_with_names_and_colours(tmp_path) -> None:
    from hrmedsegsam.errors import HRMedSegSAMError
    from hrmedsegsam.interactive import InteractiveAnnotation

    image = make_image(ramp((4, 12, 14)), direction=OBLIQUE)
    write_dicom_series(tmp_path / "ct", image, "1.2.826.0.1.3680043.2.1125.7.5")
    write_dicom_series(tmp_path / "b", image, "1.2.826.0.1.3680043.2.1125.7.6", prefix="other")
    vol = read_volume(tmp_path / "ct")
    ann = InteractiveAnnotation(vol.array, (0, 1), labels=np.zeros(vol.shape, np.int32))
    mask = np.zeros(vol.shape, bool)
    mask[1:3, 2:6, 3:9] = True
    ann.commit_volume(mask, name="pancreas", color=(240, 200, 20))
    out = ann.export(tmp_path / "seg.dcm", vol)

    again = InteractiveAnnotation(vol.array, (0, 1), labels=np.zeros(vol.shape, np.int32))
    segments = again.open_seg(out, read_volume(tmp_path / "ct"))
    assert [s.name for s in segments] == ["pancreas"]
    np.testing.assert_array_equal(again.labels, ann.labels)
    assert np.abs(np.subtract(again.session.info_of(1).color, (240, 200, 20))).max() <= 2
    with pytest.raises(HRMedSegSAMError, match="another DICOM series"):
        again.open_seg(out, read_volume(tmp_path / "b"))
