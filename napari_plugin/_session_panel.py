"""The widget's files panel: the name for Accept, sessions, exports, DICOM SEG, recovery.

A thin Qt view over :class:`~napari_plugin._sessions.SessionKeeper`: every button opens a
dialog and calls one keeper method; the recovery offer is a question box. Dialogs go
through :attr:`SessionPanel.ask_path` and :attr:`SessionPanel.ask_yes_no`, so scripts and
tests answer them without a modal dialog.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCompleter,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from hrmedsegsam.anatomy import NAMES, color_for
from napari_plugin._sessions import SessionKeeper
from napari_plugin._writer import nifti_path

NIFTI_FILTER = "NIfTI + label table (*.nii.gz *.nii)"
SEG_FILTER = "DICOM SEG (*.dcm)"


def ask_path(
    parent: QWidget, kind: str, title: str, default: str = "", filters: str = ""
) -> tuple[str, str]:
    """A Qt file dialog; ``kind``: ``"save"``, ``"open"`` or ``"folder"``. Returns
    ``(path, chosen filter)``, ``("", "")`` when cancelled.
    """
    if kind == "save":
        return QFileDialog.getSaveFileName(parent, title, default, filters)
    if kind == "open":
        return QFileDialog.getOpenFileName(parent, title, default, filters)
    return QFileDialog.getExistingDirectory(parent, title, default), ""


def ask_yes_no(parent: QWidget, title: str, text: str) -> bool:
    """A Yes/No question box; True for Yes."""
    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, title, text, buttons)
    return answer == QMessageBox.StandardButton.Yes


class SessionPanel(QGroupBox):
    """Name for the next Accept/Propagate (completion from
    :data:`hrmedsegsam.anatomy.NAMES`, colour from :func:`~hrmedsegsam.anatomy.color_for`),
    Save/Open session, Export (NIfTI + label table, or DICOM SEG for DICOM images), Open
    DICOM SEG, and the recovery question.

    Args:
        model: the widget's :class:`~napari_plugin._annotator.AnnotatorModel`.
        run: calls an action, turning library errors into the status line (the widget's
            ``_run``).
        interval_s: autosave interval for brush strokes.
    """

    def __init__(
        self,
        model: Any,
        run: Callable[..., Any],
        interval_s: float = 30.0,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Names, sessions and files", parent)
        self.model = model
        self.keeper = SessionKeeper(model, interval_s=interval_s)
        self._run = run
        self.ask_path: Callable[..., tuple[str, str]] = lambda *a: ask_path(self, *a)
        self.ask_yes_no: Callable[[str, str], bool] = lambda *a: ask_yes_no(self, *a)
        self._build()
        model.events.committed.connect(self._on_committed)
        self.keeper.events.recovery.connect(lambda e: QTimer.singleShot(0, self.offer_recovery))
        self._flush_timer = QTimer(self)
        self._flush_timer.setInterval(int(max(1.0, interval_s) * 1000))
        self._flush_timer.timeout.connect(self.keeper.flush)
        self._flush_timer.start()
        if self.keeper.pending_recovery is not None:
            QTimer.singleShot(0, self.offer_recovery)

    def _build(self) -> None:
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("name for Accept, e.g. liver")
        self.name_edit.setToolTip(
            "The next accepted or propagated object gets this name (free text; anatomical "
            "names complete) and its colour"
        )
        completer = QCompleter(list(NAMES), self.name_edit)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.name_edit.setCompleter(completer)
        self.swatch = QLabel()
        self.swatch.setFixedSize(16, 16)
        self.save_btn = QPushButton("Save session…")
        self.open_btn = QPushButton("Open session…")
        self.export_btn = QPushButton("Export…")
        self.seg_btn = QPushButton("Open DICOM SEG…")
        self.export_btn.setToolTip("NIfTI with a label table, or DICOM SEG for DICOM series")

        name_row = QHBoxLayout()
        name_row.addWidget(QLabel("Name"))
        name_row.addWidget(self.name_edit)
        name_row.addWidget(self.swatch)
        grid = QGridLayout()
        for i, w in enumerate((self.save_btn, self.open_btn, self.export_btn, self.seg_btn)):
            grid.addWidget(w, i // 2, i % 2)
        layout = QVBoxLayout(self)
        layout.addLayout(name_row)
        layout.addLayout(grid)

        self.name_edit.textChanged.connect(self._on_name)
        self.save_btn.clicked.connect(lambda: self._run(self.save_dialog))
        self.open_btn.clicked.connect(lambda: self._run(self.open_dialog))
        self.export_btn.clicked.connect(lambda: self._run(self.export_dialog))
        self.seg_btn.clicked.connect(lambda: self._run(self.open_seg_dialog))
        self._on_name("")

    # ------------------------------------------------------------------ name
    def _on_name(self, text: str) -> None:
        self.model.accept_name = text.strip()
        if text.strip():
            r, g, b = color_for(text.strip())
            self.swatch.setStyleSheet(f"background-color: rgb({r}, {g}, {b});")
        else:
            self.swatch.setStyleSheet("")

    def _on_committed(self, event: Any = None) -> None:
        if not self.model.accept_name and self.name_edit.text():
            self.name_edit.clear()  # the model used the name for the object it committed

    # ------------------------------------------------------------------ dialogs
    def save_dialog(self) -> None:
        """Ask for a folder and save the session there (asking before replacing one)."""
        from hrmedsegsam.session_file import is_session, read_session_info

        path, _ = self.ask_path(
            "folder", "Save the session into a folder (new or empty, or this image's session)"
        )
        if not path:
            return
        if is_session(path):
            info = read_session_info(path)  # a corrupt one: its one-line error
            text = (
                f"{path} holds a session saved {info['saved']} with "
                f"{len(info['objects'])} object(s). Replace it with the annotation shown?"
            )
            if not self.ask_yes_no("Replace the session", text):
                return
        self.keeper.save_session(path)

    def open_dialog(self) -> None:
        """Ask for a session folder of this image and open it."""
        path, _ = self.ask_path("folder", "Open a session folder of this image")
        if path and self._may_replace("the session"):
            self.keeper.open_session(path)

    def open_seg_dialog(self) -> None:
        """Ask for a DICOM SEG of this image's series and open it."""
        path, _ = self.ask_path(
            "open", "Open a DICOM SEG of this series", "", f"{SEG_FILTER};;All files (*)"
        )
        if path and self._may_replace(Path(path).name):
            self.keeper.open_seg(path)

    def export_dialog(self) -> None:
        """Ask for a file and export: NIfTI + label table, or DICOM SEG (DICOM images)."""
        filters = f"{NIFTI_FILTER};;{SEG_FILTER}" if self.keeper.is_dicom() else NIFTI_FILTER
        path, chosen = self.ask_path("save", "Export labels", "labels.nii.gz", filters)
        if not path:
            return
        seg = chosen == SEG_FILTER or path.lower().endswith(".dcm")
        if seg:
            target = path if path.lower().endswith(".dcm") else path + ".dcm"
        else:
            target = nifti_path(path)
        # the dialog asked before replacing `path` itself, never a name completed here
        self.keeper.export(
            target, overwrite=target == path and Path(path).exists(), fmt="seg" if seg else None
        )

    def _may_replace(self, what: str) -> bool:
        """Ask before ``what`` replaces objects on screen (they are not in the undo history)."""
        n = len(self.model.objects())
        if n == 0:
            return True
        return self.ask_yes_no(
            "Replace the labels",
            f"Opening {what} replaces the {n} object(s) shown (this cannot be undone; "
            "save a session first to keep them). Go on?",
        )

    def offer_recovery(self) -> None:
        """Ask whether to recover the work an earlier run left on this image."""
        found = self.keeper.pending_recovery
        if found is None:
            return
        objects = found["objects"]
        names = ", ".join(o["info"].name for o in objects[:6]) + ("…" if len(objects) > 6 else "")
        replaced = len(self.model.objects())
        text = (
            f"Work on this image that was not saved was found ({len(objects)} object(s): "
            f"{names}; autosaved {found['saved']}). Recover it?"
            + (f" It replaces the {replaced} object(s) shown." if replaced else "")
            + " No discards it."
        )
        if self.ask_yes_no("Recover annotation", text):
            self._run(self.keeper.recover)
        else:
            self.keeper.discard_recovery()
            self.model.say("Discarded the autosaved work.")
