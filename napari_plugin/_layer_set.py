"""The napari layers of one annotation: the image, its labels and the annotator's helpers.

:class:`LayerSet` makes (or reuses) them, tells whether they are all still in the viewer,
and maps the viewer's slider to the image's slice index. No model or annotation logic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hrmedsegsam.errors import HRMedSegSAMError
from napari_plugin import _prompt_layers as pl
from napari_plugin._geometry import META_KEY, same_transform_kwargs


def check_image_layer(layer: Any) -> None:
    """Raise unless ``layer`` is a greyscale 2D or 3D Image layer."""
    from napari.layers import Image

    if not isinstance(layer, Image) or getattr(layer, "rgb", False):
        raise HRMedSegSAMError("Choose a greyscale Image layer to annotate.")
    ndim = np.asarray(layer.data).ndim
    if ndim not in (2, 3):
        raise HRMedSegSAMError(
            f"Only 2D and 3D images can be annotated; {layer.name!r} has {ndim} dimensions."
        )


def is_label_map_of(layer: Any, image_layer: Any) -> bool:
    """Whether ``layer`` is a label map the reader resampled onto ``image_layer``'s grid."""
    from napari.layers import Labels

    return (
        isinstance(layer, Labels)
        and pl.role(layer) is None
        and "resampled_from" in layer.metadata
        and layer.data.shape == np.asarray(image_layer.data).shape
    )


def labels_array(layer: Any, image_layer: Any) -> np.ndarray:
    """``layer``'s data as an integer array shaped like the image (converted in the layer
    if it is not one); the layer gets the image's geometry metadata if it has none.
    """
    data = layer.data
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "iu":
        data = np.asarray(data).astype(np.int32)
        layer.data = data
    shape = np.asarray(image_layer.data).shape
    if data.shape != shape:
        raise HRMedSegSAMError(
            f"The labels layer {layer.name!r} is {data.shape} but the image is {shape}."
        )
    if META_KEY not in layer.metadata and META_KEY in image_layer.metadata:
        layer.metadata = {**layer.metadata, META_KEY: image_layer.metadata[META_KEY]}
    return data


def spacing_zyx(image_layer: Any) -> tuple[float, ...]:
    """Voxel size ``(z, y, x)`` in mm (a 2D image: 1 mm thick), from the source geometry
    or else the layer's scale.
    """
    meta = image_layer.metadata.get(META_KEY)
    spacing = tuple(meta["spacing"][::-1]) if meta else tuple(image_layer.scale)[-3:]
    return spacing if np.asarray(image_layer.data).ndim == 3 else (1.0,) + tuple(spacing[-2:])


class LayerSet:
    """The image, the labels it is annotated into, and the helper layers drawn over it.

    Making one removes the helpers of an earlier annotation, reuses ``labels`` (or an
    unclaimed Labels layer shaped like the image, or a new one), and adds the preview, box
    and points layers with the image's transforms. :meth:`connect` hooks the annotator's
    handlers to the layers' events, :meth:`disconnect` unhooks every one of them.
    """

    #: prompt tool -> (the layer it draws in, that layer's mode)
    TOOLS = {
        "points": ("points", "add"),
        "box": ("box", "add_rectangle"),
        "scribble": ("strokes", "add_path"),
        "lasso": ("strokes", "add_polygon_lasso"),
    }

    def __init__(self, viewer: Any, image: Any, labels: Any = None) -> None:
        self.viewer = viewer
        self.image = image
        for old in [lay for lay in viewer.layers if pl.role(lay) is not None]:
            viewer.layers.remove(old)
        self.labels = labels if labels is not None else self._find_or_make_labels()
        self.preview = pl.make_preview_layer(viewer, image)
        self.box = pl.make_box_layer(viewer, image)
        self.strokes = pl.make_strokes_layer(viewer, image)
        self.points = pl.make_points_layer(viewer, image)
        self._connections: list[tuple[Any, Any]] = []
        self._on_labels: Any = None

    def connect(self, on_contrast: Any, on_slice: Any, on_prompts: Any, on_labels: Any) -> None:
        """Call ``on_contrast`` when the image's contrast limits change, ``on_slice`` when
        the shown slice does, ``on_prompts`` on prompt layer edits and ``on_labels`` when
        the labels are painted or replaced.
        """
        self._connections = [
            (self.image.events.contrast_limits, on_contrast),
            (self.viewer.dims.events.current_step, on_slice),
            (self.points.events.data, on_prompts),
            (self.box.events.data, on_prompts),
            (self.strokes.events.data, on_prompts),
        ]
        for emitter, handler in self._connections:
            emitter.connect(handler)
        self._on_labels = on_labels
        self.set_labels(self.labels)

    def set_labels(self, layer: Any) -> None:
        """Annotate into ``layer`` from now on (its events go to the ``on_labels`` handler)."""
        self._connect_labels(False)
        self.labels = layer
        self._connect_labels(True)

    def disconnect(self) -> None:
        for emitter, handler in self._connections:
            emitter.disconnect(handler)
        self._connect_labels(False)
        self._connections, self._on_labels = [], None

    def _connect_labels(self, on: bool) -> None:
        if self._on_labels is not None:  # (a napari emitter's disconnect(None) drops every handler)
            for emitter in (self.labels.events.paint, self.labels.events.data):
                emitter.connect(self._on_labels) if on else emitter.disconnect(self._on_labels)

    @property
    def helpers(self) -> tuple[Any, ...]:
        return self.preview, self.points, self.box, self.strokes

    @property
    def ndim(self) -> int:
        return int(np.asarray(self.image.data).ndim)

    def intact(self) -> bool:
        """Whether every layer of the set is still in the viewer."""
        return all(lay in self.viewer.layers for lay in (self.image, self.labels, *self.helpers))

    def remove_helpers(self) -> None:
        for helper in self.helpers:
            if helper in self.viewer.layers:
                self.viewer.layers.remove(helper)

    def keep_helpers_on_top(self, layer: Any) -> None:
        """Move ``layer`` below the preview, so prompts and the preview stay visible."""
        layers = self.viewer.layers
        if self.preview in layers and layer in layers:
            layers.move(layers.index(layer), layers.index(self.preview))

    def displayed_window(self) -> tuple[float, float]:
        """The image layer's contrast limits ``(lo, hi)``, widened to ``lo + 1`` if empty."""
        lo, hi = (float(v) for v in self.image.contrast_limits)
        return (lo, hi) if hi > lo else (lo, lo + 1.0)

    def use(self, tool: str) -> None:
        """Make ``tool``'s layer the active one, in the mode that draws that prompt."""
        role, mode = self.TOOLS[tool]
        layer = getattr(self, role)
        self.viewer.layers.selection.active = layer
        layer.mode = mode

    def current_z(self) -> int:
        """The slice shown (data index of the image's first axis; 0 for a 2D image)."""
        if self.ndim == 2:
            return 0
        pos = self.image.world_to_data(self.viewer.dims.point)
        return int(np.clip(round(float(pos[0])), 0, np.asarray(self.image.data).shape[0] - 1))

    def set_current_z(self, z: int) -> None:
        """Show slice ``z`` of the image."""
        if self.ndim == 2:
            return
        point = list(self.image.world_to_data(self.viewer.dims.point))
        point[0] = float(z)
        self.viewer.dims.set_point(0, float(self.image.data_to_world(point)[0]))

    def _find_or_make_labels(self) -> Any:
        """A labels layer of the image's shape that is no helper and not the labels made
        for another open image (annotating image B into image A's labels would overwrite
        A's work), else a new one named after the image.
        """
        from napari.layers import Image, Labels

        shape = np.asarray(self.image.data).shape
        others = {
            f"{lay.name} labels"
            for lay in self.viewer.layers
            if isinstance(lay, Image) and lay is not self.image
        }
        for lay in self.viewer.layers:
            if (
                isinstance(lay, Labels)
                and pl.role(lay) is None
                and lay.data.shape == shape
                and lay.name not in others
            ):
                return lay
        return self.viewer.add_labels(
            np.zeros(shape, dtype=np.int32),
            name=f"{self.image.name} labels",
            metadata={k: v for k, v in self.image.metadata.items() if k == META_KEY},
            **same_transform_kwargs(self.image),
        )
