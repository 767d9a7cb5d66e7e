"""Reading medical volumes and writing label maps, with their geometry (SimpleITK).

One job a module: :mod:`~hrmedsegsam.io.volume` (the :class:`Volume` and its geometry
conventions, read them there), :mod:`~hrmedsegsam.io.dicom` (series discovery and reading),
:mod:`~hrmedsegsam.io.read` (any format, validated), :mod:`~hrmedsegsam.io.integrity` (are a
file's voxel data complete: NIfTI sizes, gzip CRC; checked on reading and after writing),
:mod:`~hrmedsegsam.io.labels` (writing through :func:`hrmedsegsam.atomic.write_verified`:
verified, atomic, no clobber), :mod:`~hrmedsegsam.io.resample` (labels onto an image by physical
space), :mod:`~hrmedsegsam.io.seg` (DICOM SEG out and in, highdicom),
:mod:`~hrmedsegsam.io.label_table` (the id/name/colour sidecar of a NIfTI) and
:mod:`~hrmedsegsam.io.export` (either format, by file name). The public names are all
importable from here.

Importing this package needs only numpy and SimpleITK (never torch, napari or highdicom).
"""

from hrmedsegsam.io.dicom import DicomSeries, list_dicom_series
from hrmedsegsam.io.export import check_export_output, export_labels
from hrmedsegsam.io.label_table import label_table_path, read_label_table, write_label_table
from hrmedsegsam.io.labels import check_label_output, write_labels
from hrmedsegsam.io.read import read_image, read_volume
from hrmedsegsam.io.resample import resample_labels_to
from hrmedsegsam.io.seg import Segment, read_seg, write_seg
from hrmedsegsam.io.volume import Volume, describe

__all__ = [
    "Volume",
    "DicomSeries",
    "list_dicom_series",
    "read_volume",
    "read_image",
    "write_labels",
    "check_label_output",
    "resample_labels_to",
    "describe",
    "Segment",
    "write_seg",
    "read_seg",
    "export_labels",
    "check_export_output",
    "label_table_path",
    "read_label_table",
    "write_label_table",
]
