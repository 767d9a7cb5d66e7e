"""Reader, writer and sample data against real files written by SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
sitk = pytest.importorskip("SimpleITK")

from hrmedsegsam.errors import OutputExistsError  # noqa: E402
from hrmedsegsam.io import read_label_table  # noqa: E402
from napari_plugin._reader import image_layer_data, napari_get_reader, read_path  # noqa: E402
from napari_plugin._writer import write_labels, write_layer  # noqa: E402


def test_reader_declines_what_it_cannot_read(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert napari_get_reader(str(text)) is None
    assert napari_get_reader(str(tmp_path / "missing.nii.gz")) is None
    assert napari_get_reader([str(text), str(text)]) is None
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert napari_get_reader(str(empty)) is None
    # a file with the right suffix but garbage inside: the reader returns None, no exception
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti file at all")
    reader = napari_get_reader(str(bad))
    assert reader is not None
    assert reader(str(bad)) is None


def test_open_nifti_places_voxels_in_mm(make_napari_viewer, ct_file):
    path, vol, _ = ct_file
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="hrmedsegsam")
    assert len(layers) == 1
    layer = layers[0]
    assert layer._type_string == "image"
    np.testing.assert_array_equal(layer.data, vol.array)
    np.testing.assert_allclose(layer.scale, (3.0, 0.7, 0.7))
    np.testing.assert_allclose(layer.translate, (100.0, 15.0, -20.0))
    meta = layer.metadata["hrmedsegsam"]
    np.testing.assert_allclose(meta["spacing"], (0.7, 0.7, 3.0))
    np.testing.assert_allclose(meta["origin"], (-20.0, 15.0, 100.0))
    assert meta["shape_zyx"] == vol.shape
    # world position of a voxel is its physical position (components z, y, x)
    world = layer.data_to_world([2, 10, 5])
    np.testing.assert_allclose(world, vol.index_to_physical([2, 10, 5])[::-1])


def test_oblique_direction_uses_affine(make_napari_viewer, tmp_path, make_small_ct):
    vol, _ = make_small_ct()
    c, s = np.cos(0.3), np.sin(0.3)
    image = vol.to_sitk()
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))
    path = tmp_path / "oblique.mha"
    sitk.WriteImage(image, str(path))
    viewer = make_napari_viewer()
    layer = viewer.open(str(path), plugin="hrmedsegsam")[0]
    from hrmedsegsam.io import read_volume

    ref = read_volume(path)
    assert ref.is_oblique
    for idx in ([0, 0, 0], [3, 17, 41], [5, 63, 2]):
        np.testing.assert_allclose(
            layer.data_to_world(idx), ref.index_to_physical(idx)[::-1], atol=1e-6
        )


def test_labels_file_opens_onto_image_by_physical_space(make_napari_viewer, ct_file, tmp_path):
    path, vol, ref_labels = ct_file
    # labels saved on a coarser grid (2x in-plane spacing), same physical extent
    coarse = ref_labels[:, ::2, ::2].astype(np.uint8)
    image = sitk.GetImageFromArray(coarse)
    image.SetSpacing((1.4, 1.4, 3.0))
    image.SetOrigin((-20.0 + 0.35, 15.0 + 0.35, 100.0))
    lab_path = tmp_path / "ct_seg.nii.gz"
    sitk.WriteImage(image, str(lab_path))

    viewer = make_napari_viewer()
    img_layer = viewer.open(str(path), plugin="hrmedsegsam")[0]
    lab_layer = viewer.open(str(lab_path), plugin="hrmedsegsam")[0]
    assert lab_layer._type_string == "labels"
    assert lab_layer.data.shape == img_layer.data.shape
    np.testing.assert_allclose(lab_layer.scale, img_layer.scale)
    np.testing.assert_allclose(lab_layer.translate, img_layer.translate)
    # nearest-neighbour resampling: agrees with the full-resolution reference almost everywhere
    agree = (lab_layer.data == ref_labels).mean()
    assert agree > 0.97
    assert set(np.unique(lab_layer.data)) <= set(np.unique(ref_labels))


def test_labels_file_alone_keeps_its_own_geometry(tmp_path):
    lab = np.zeros((3, 10, 12), np.uint8)
    lab[1, 2:5, 3:7] = 2
    image = sitk.GetImageFromArray(lab)
    image.SetSpacing((0.5, 0.6, 2.0))
    path = tmp_path / "seg.nrrd"
    sitk.WriteImage(image, str(path))
    ((data, kwargs, kind),) = read_path(str(path))
    assert kind == "labels" and data.dtype == np.int32
    np.testing.assert_array_equal(data, lab)
    np.testing.assert_allclose(kwargs["scale"], (2.0, 0.6, 0.5))


def test_writer_keeps_source_geometry_and_never_overwrites(make_napari_viewer, ct_file, tmp_path):
    path, vol, ref_labels = ct_file
    viewer = make_napari_viewer()
    img = viewer.open(str(path), plugin="hrmedsegsam")[0]
    labels = viewer.add_labels(
        ref_labels.astype(np.int32),
        metadata=dict(img.metadata),
        scale=img.scale,
        translate=img.translate,
    )
    out = tmp_path / "out.nii.gz"
    written = write_layer(str(out), labels)
    assert written == str(out)
    back = sitk.ReadImage(written)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), ref_labels)
    np.testing.assert_allclose(back.GetSpacing(), vol.spacing)
    np.testing.assert_allclose(back.GetOrigin(), vol.origin)
    np.testing.assert_allclose(back.GetDirection(), vol.direction)
    with pytest.raises(OutputExistsError):
        write_layer(str(out), labels)
    # napari's save goes through the same writer (npe2 contribution)
    viewer.layers.selection.active = labels
    with pytest.raises(Exception):  # noqa: B017 - napari wraps the plugin's error
        viewer.layers.save(str(out), selected=True, plugin="hrmedsegsam")
    out2 = tmp_path / "saved_by_napari.nii.gz"
    viewer.layers.save(str(out2), selected=True, plugin="hrmedsegsam")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out2))), ref_labels)


def test_writer_appends_suffix_and_handles_2d(tmp_path):
    data = np.zeros((8, 9), np.int32)
    data[2:4, 3:6] = 3
    meta = {"scale": (0.2, 0.3), "translate": (1.0, 2.0), "metadata": {}}
    out, table = write_labels(str(tmp_path / "flat"), data, meta)
    assert out.endswith("flat.nii.gz") and table.endswith("flat.labels.tsv")
    assert [(s.label_id, s.name) for s in read_label_table(table)] == [(3, "object 3")]
    back = sitk.ReadImage(out)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back)[0], data)
    np.testing.assert_allclose(back.GetSpacing()[:2], (0.3, 0.2))
    np.testing.assert_allclose(back.GetOrigin()[:2], (2.0, 1.0))


def test_sample_data_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("hrmedsegsam", "ct")
    ct = layers[0]
    assert ct.data.ndim == 3 and ct.data.dtype == np.int16
    assert ct.data.min() < -900 and ct.data.max() > 500  # air and bone in HU
    np.testing.assert_allclose(ct.scale, (2.5, 0.8, 0.8))
    assert ct.contrast_limits == [-160.0, 240.0]
    from napari_plugin._sample_data import make_radiograph

    xr = make_radiograph(size=256)
    assert xr.shape == (1, 256, 256) and xr.array.std() > 100
    data, kwargs, kind = image_layer_data(xr)
    assert data.shape == (256, 256) and len(kwargs["scale"]) == 2


def test_radiograph_sample_is_high_resolution():
    from napari_plugin._sample_data import radiograph_sample

    ((data, kwargs, kind),) = radiograph_sample()
    assert kind == "image" and data.shape == (2048, 2048)
    assert "hrmedsegsam" in kwargs["metadata"]


def _dicom_folder(folder, vol, uid="1.2.826.0.1.3680043.2.1125.7.1"):
    """Writes ``vol`` as one extension-less DICOM file per slice (axial, identity direction)."""
    folder.mkdir()
    image = vol.to_sitk()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    sx, sy, sz = vol.spacing
    for k in range(vol.shape[0]):
        plane = image[:, :, k]
        x, y, z = image.TransformIndexToPhysicalPoint((0, 0, k))
        meta = {
            "0008|0060": "CT",
            "0020|000e": uid,
            "0020|000d": uid + ".0",
            "0020|0013": str(k + 1),
            "0020|0032": f"{x}\\{y}\\{z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{sy}\\{sx}",
            "0018|0050": f"{sz}",
        }
        for key, value in meta.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}"))
        writer.SetImageIO("GDCMImageIO")
        writer.Execute(plane)
    return folder


def test_open_dicom_folder(make_napari_viewer, tmp_path, make_small_ct):
    vol, _ = make_small_ct()
    folder = _dicom_folder(tmp_path / "series", vol)
    assert napari_get_reader(str(folder)) is not None
    viewer = make_napari_viewer()
    layer = viewer.open(str(folder), plugin="hrmedsegsam")[0]
    np.testing.assert_array_equal(layer.data, vol.array)
    np.testing.assert_allclose(layer.scale, (3.0, 0.7, 0.7), atol=1e-4)
    np.testing.assert_allclose(layer.translate, vol.origin_zyx, atol=1e-4)
    assert layer.metadata["hrmedsegsam"]["modality"] == "CT"
    assert tuple(layer.contrast_limits) == (-160.0, 240.0)  # CT: the abdomen window
