"""The widget's volume tools: fill between key slices and propagate all objects.

A thin Qt view: each button calls one :class:`~napari_plugin._annotator.AnnotatorModel`
method through the widget's ``run`` (library errors to the status line); the progress bar
and Cancel are the widget's, shared with Propagate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QCheckBox, QGroupBox, QHBoxLayout, QPushButton, QShortcut

from hrmedsegsam.errors import HRMedSegSAMError

#: keyboard shortcuts (napari key names): action -> key; shown in tooltips and README
VOLUME_SHORTCUTS = {"fill": "Alt-F", "propagate_all": "Alt-O"}


class VolumePanel(QGroupBox):
    """Fill between / Propagate all, and whether Propagate all takes only the selected object.

    Args:
        model: the widget's AnnotatorModel.
        run: ``run(fn, *args)`` calls a model action, errors to the status line.
        selected_id: the id of the object selected in the list, or None.
        key_text: napari key name -> the text shown in tooltips (``Alt+F``).
    """

    def __init__(
        self,
        model: Any,
        run: Callable[..., Any],
        selected_id: Callable[[], int | None],
        key_text: Callable[[str], str],
    ) -> None:
        super().__init__("Volume")
        self.model, self._run, self._selected_id = model, run, selected_id
        self.fill_btn = QPushButton("Fill between")
        self.all_btn = QPushButton("Propagate all")
        self.selected_check = QCheckBox("selected only")
        tips = {
            "fill": (
                self.fill_btn,
                "Segment the slices between the key slices of the current object (prompt it "
                "on two slices), or fill the gaps of the selected object",
            ),
            "propagate_all": (
                self.all_btn,
                "Extend every accepted object (or the selected one) up and down the volume",
            ),
        }
        for action, (w, tip) in tips.items():
            w.setToolTip(f"{tip} ({key_text(VOLUME_SHORTCUTS[action])})")
        self.selected_check.setToolTip("Propagate all: only the object selected in the list")
        row = QHBoxLayout(self)
        for w in (self.fill_btn, self.all_btn, self.selected_check):
            row.addWidget(w)
        self.fill_btn.clicked.connect(self.fill)
        self.all_btn.clicked.connect(self.propagate_all)
        for action, fn in (("fill", self.fill), ("propagate_all", self.propagate_all)):
            shortcut = QShortcut(QKeySequence(key_text(VOLUME_SHORTCUTS[action])), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(fn)

    def bindings(self) -> dict[str, Callable[[], Any]]:
        """The keys for the viewer's keymap (napari key names) -> actions."""
        return {
            VOLUME_SHORTCUTS["fill"]: self.fill,
            VOLUME_SHORTCUTS["propagate_all"]: self.propagate_all,
        }

    def fill(self) -> Any:
        return self._run(self.model.fill_between, self._selected_id())

    def propagate_all(self) -> Any:
        return self._run(self._propagate_all)

    def _propagate_all(self) -> None:
        if not self.selected_check.isChecked():
            return self.model.propagate_objects(None)
        chosen = self._selected_id()
        if chosen is None:
            raise HRMedSegSAMError(
                "Select an object in the list first (or untick 'selected only')."
            )
        return self.model.propagate_objects([chosen])

    def set_running(self, on: bool) -> None:
        for w in (self.fill_btn, self.all_btn):
            w.setEnabled(not on)
