"""napari plugin for HRMedSegSAM: reader, writer, sample data and the annotation widget.

The plugin only adapts the library (:mod:`hrmedsegsam`); it holds no model or geometry
logic of its own. Importing this package is cheap: napari, Qt and torch are imported by
the submodules that need them, when napari (npe2) calls them.

* ``_reader`` / ``_writer``: files <-> layers, geometry in millimetres;
* ``_sample_data``: offline synthetic CT volume and high-resolution 2D image;
* ``_compute``: the background thread that runs the model (embeddings, prefetch, propagation);
* ``_annotator``: :class:`AnnotatorModel`, the widget's state and actions (no Qt widgets),
  with ``_preview_sync`` (prompt layers and window in, preview out) and
  ``_propagation_runs`` (propagate, fill between, propagate all: start, progress, commit);
* ``_widget``: the thin Qt view; ``_launch``: ``hrmedsegsam napari [PATH]``.
"""

__all__ = ["MANIFEST"]

#: npe2 manifest file name inside this package (identical to the repository root copy)
MANIFEST = "napari.yaml"
