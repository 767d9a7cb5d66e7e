"""SessionKeeper: sessions, autosave, recovery and exports for the annotation widget.

A thin adapter between :class:`~napari_plugin._annotator.AnnotatorModel` and the library's
persistence (:mod:`hrmedsegsam.session_file`, :mod:`hrmedsegsam.recovery`,
:mod:`hrmedsegsam.io.export`, :mod:`hrmedsegsam.io.seg`); every policy (file format,
atomic writes, fingerprints, never writing over another image's session) is the library's.
No Qt widget here (the view is :mod:`napari_plugin._session_panel`). It listens to the model:

* ``attached`` (a new image or labels layer): starts an
  :class:`~hrmedsegsam.recovery.Autosaver` for that image, names the objects of a labels
  layer that came with names (a DICOM SEG or session opened by the reader:
  ``metadata["segments"]``), and, once per image, emits ``recovery`` (``value``: the
  recovered ``session.json``, its folder under ``"path"``) when an earlier run left work
  on this image;
* ``committed``: autosaves now; brush strokes (the labels layer's ``paint`` event):
  autosave at most every ``interval_s`` seconds (the view calls :meth:`flush` on a timer
  for what is left). Autosaves copy the labels on the UI thread and write them on the
  Autosaver's worker thread (``background=True``); a failed write goes to the status line.

Until an offered recovery is answered (:meth:`recover` or :meth:`discard_recovery`),
nothing is autosaved, so the work of the earlier run is never written over unseen.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hrmedsegsam.errors import HRMedSegSAMError
from hrmedsegsam.recovery import Autosaver, find_recovery
from napari_plugin._geometry import SEGMENTS_KEY

if TYPE_CHECKING:
    from hrmedsegsam.io import Volume


class SessionKeeper:
    """Sessions, recovery and exports of one :class:`AnnotatorModel`.

    Args:
        model: the annotator model.
        interval_s: the least time between two autosaves caused by brush strokes.
        recovery_root: where recovery folders go (default:
            :func:`hrmedsegsam.recovery.recovery_root`).
    """

    def __init__(
        self, model: Any, interval_s: float = 30.0, recovery_root: Path | None = None
    ) -> None:
        from napari.utils.events import EmitterGroup

        self.model = model
        self.interval_s = float(interval_s)
        self.recovery_root = recovery_root
        self.events = EmitterGroup(source=self, recovery=None)
        self.autosaver: Autosaver | None = None
        self.pending_recovery: dict | None = None
        self._core: Any = None  # the core the autosaver saves
        self._offered: set[str] = set()  # image fingerprints whose recovery was offered
        self._painted: Any = None  # the labels layer whose brush strokes we follow
        self._colors: dict = {}  # id -> RGBA shown on ``_colored``
        self._colored: Any = None
        model.events.attached.connect(self._on_attached)
        model.events.committed.connect(self._on_committed)
        if model.core is not None:
            self._on_attached()

    # ------------------------------------------------------------------ files
    def save_session(self, path: str | Path) -> Path:
        """Save the annotation as a session folder at ``path`` (new, empty, or a session
        of this image); returns the folder.
        """
        folder = self._need_core().save_session(
            path, self.volume(), image_fingerprint=self._fingerprint()
        )
        self.model.say(f"Saved the session {folder}.")
        return folder

    def open_session(self, path: str | Path) -> None:
        """Replace the labels and objects with the session at ``path`` (for this image
        only: another image's session is refused and nothing changes).
        """
        saved = self._need_core().open_session(
            path, self.volume(), image_fingerprint=self._fingerprint()
        )
        self.model.reload()
        self.model.say(f"Opened the session {saved.path}: {len(saved.objects)} object(s).")

    def open_seg(self, path: str | Path) -> None:
        """Replace the labels and objects with a DICOM SEG of this image's series (a SEG of
        another series is refused and nothing changes).
        """
        segments = self._need_core().open_seg(path, self.volume())
        self.model.reload()
        self.model.say(f"Opened {Path(path).name}: {len(segments)} segment(s).")

    def export(self, path: str, overwrite: bool = False, fmt: str | None = None) -> str:
        """Writes the labels on the source grid with the objects' names and colours: NIfTI
        (``.nii.gz`` added unless the name ends in .nii/.nii.gz) plus its ``.labels.tsv``
        table, or DICOM SEG (``.dcm`` or ``fmt="seg"``; DICOM images only). Never
        overwrites unless ``overwrite`` (the user confirmed). Returns the labels file.
        """
        from hrmedsegsam.io.export import export_format
        from napari_plugin._writer import nifti_path

        if self.model.core is None:
            raise HRMedSegSAMError("There are no labels to export yet.")
        if export_format(path, fmt) == "nifti":
            path = nifti_path(path)
        out = str(self.model.core.export(path, self.volume(), overwrite=overwrite, fmt=fmt))
        self.model.say(f"Saved {out}.")
        return out

    def volume(self) -> Volume:
        """The annotated image as a :class:`hrmedsegsam.io.Volume` ``(z, y, x)``: the
        source geometry, path and DICOM series from the layer's metadata (voxels not copied).
        """
        from napari_plugin._geometry import volume_from_layer

        if self.model.core is None:
            raise HRMedSegSAMError("Open an image first.")
        return volume_from_layer(self.model.image_layer, self.model.core.image)

    def is_dicom(self) -> bool:
        """The annotated image was read from a DICOM series (DICOM SEG can be written)."""
        return self.model.core is not None and bool(self.volume().series_uid)

    def show_objects(self, objects: list) -> None:
        """Colour the labels layer with the objects' colours (what exports write) and keep
        their names and colours in its ``metadata["segments"]`` (what napari's own Save
        writes into the label table). ``objects``: :class:`~hrmedsegsam.session.ObjectSummary`
        of the labels; ids without one are shown grey.
        """
        from napari.utils.colormaps import DirectLabelColormap

        layer = self.model.labels_layer
        if layer is None:
            return
        rows = [{"id": o.id, "name": o.name, "color": list(o.color)} for o in objects]
        if layer.metadata.get(SEGMENTS_KEY) != rows:
            layer.metadata = {**layer.metadata, SEGMENTS_KEY: rows}
        colors = {o.id: tuple(c / 255.0 for c in o.color) + (1.0,) for o in objects}
        if colors == self._colors and layer is self._colored:
            return
        self._colors, self._colored = colors, layer
        layer.colormap = DirectLabelColormap(
            color_dict={None: (0.6, 0.6, 0.6, 1.0), 0: (0.0, 0.0, 0.0, 0.0), **colors}
        )

    # ------------------------------------------------------------------ recovery
    def recover(self) -> None:
        """Open the recovered session offered by the ``recovery`` event."""
        if self.pending_recovery is None:
            raise HRMedSegSAMError("There is nothing to recover for this image.")
        path = self.pending_recovery["path"]
        self.pending_recovery = None
        self.open_session(path)
        self.model.say(f"Recovered {len(self.model.objects())} object(s) from the last session.")

    def discard_recovery(self) -> None:
        """Drop the offered recovery (the user declined it): its folder is removed."""
        self.pending_recovery = None
        if self.autosaver is not None:
            self.autosaver.discard()

    def flush(self) -> bool:
        """Autosave brush strokes not saved yet; returns whether it saved."""
        if self.autosaver is None or self.pending_recovery is not None:
            return False
        return bool(self._guarded(self.autosaver.flush))

    def close(self, timeout: float = 30.0) -> None:
        """Autosave what is left and wait (up to ``timeout`` s) until it is on disk."""
        self.flush()
        if self.autosaver is not None:
            self.autosaver.wait(timeout)

    # ------------------------------------------------------------------ internals
    def _need_core(self) -> Any:
        if self.model.core is None:
            raise HRMedSegSAMError("Open an image first.")
        return self.model.core

    def _fingerprint(self) -> str | None:
        if self.autosaver is not None and self._core is self.model.core:
            return self.autosaver.fingerprint
        return None

    def _on_attached(self, event: Any = None) -> None:
        model = self.model
        if self._painted is not None:
            self._painted.events.paint.disconnect(self._on_painted)
        self._painted = model.labels_layer
        self._painted.events.paint.connect(self._on_painted)
        core = self._core = model.core
        segments = model.labels_layer.metadata.get(SEGMENTS_KEY) or ()
        for s in segments:
            color = tuple(s["color"]) if s.get("color") else None
            core.session.rename(int(s["id"]), str(s["name"]), color)
        if segments:
            model.events.objects()
        fingerprint = self.autosaver.fingerprint if self._same_image() else None
        if self.autosaver is not None:
            self.autosaver.wait()  # one writer per recovery folder at a time
        self.autosaver = Autosaver(
            self.volume() if fingerprint is None else self.autosaver.like,
            lambda: core.labels,
            core.session.infos,
            lambda: core.window,
            interval_s=self.interval_s,
            root=self.recovery_root,
            image_fingerprint=fingerprint,
            background=True,
            on_error=self._report,
        )
        fp = self.autosaver.fingerprint
        if fp in self._offered:
            return
        self._offered.add(fp)
        found = find_recovery(None, image_fingerprint=fp, root=self.recovery_root)
        if found is not None and found["objects"]:
            self.pending_recovery = found
            self.events.recovery(value=found)

    def _same_image(self) -> bool:
        """The autosaver's image is the one annotated now (a new labels layer on it)."""
        saver = self.autosaver
        return saver is not None and saver.like.array is self.model.core.image

    def _on_committed(self, event: Any = None) -> None:
        if self.autosaver is not None and self.pending_recovery is None:
            if self.model.core is self._core:
                self._guarded(self.autosaver.committed)

    def _on_painted(self, event: Any = None) -> None:
        if self.autosaver is not None and self.pending_recovery is None:
            self._guarded(self.autosaver.edited)

    def _report(self, exc: BaseException) -> None:
        """A background write failed (called on the writer's thread)."""
        from superqt.utils import ensure_main_thread

        ensure_main_thread(self.model.say)(f"Autosave failed: {exc}")

    def _guarded(self, fn: Any) -> Any:
        try:
            return fn()
        except (HRMedSegSAMError, OSError) as exc:  # a full disk must not stop the annotation
            self.model.say(f"Autosave failed: {exc}")
            return False
