"""The annotation dock widget: a thin Qt view over :class:`AnnotatorModel`.

Every control calls one model method (through :meth:`AnnotatorWidget._run`, which turns
library errors into the status line and a napari notification); the model's events
refresh the view. No segmentation, geometry or history logic lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QKeySequence
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QShortcut,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from hrmedsegsam.errors import HRMedSegSAMError
from napari_plugin._annotator import AnnotatorModel
from napari_plugin._preview_sync import WINDOW_CHOICES
from napari_plugin._prompt_layers import role
from napari_plugin._session_panel import SessionPanel
from napari_plugin._volume_panel import VolumePanel

OVERWRITE, KEEP = "overwrite", "keep existing"
NO_STORE = "none: computed (choose a store…)"

#: keyboard shortcuts (napari key names): action -> key; shown in tooltips and README
SHORTCUTS = {
    "undo": "Control-Z",
    "redo": "Control-Shift-Z",
    "negative": "N",
    "accept": "Alt-A",
    "next": "Alt-N",
    "propagate": "Alt-P",
    "points": "Alt-1",
    "box": "Alt-2",
    "scribble": "Alt-3",
    "lasso": "Alt-4",
}


def _key_text(key: str) -> str:
    return key.replace("Control", "Ctrl").replace("-", "+")


class AnnotatorWidget(QWidget):
    """Dock widget: model, window, prompts, accept / next / undo / redo, propagate, objects,
    names, sessions and exports (:class:`~napari_plugin._session_panel.SessionPanel`),
    status line. ``predictor`` (optional) skips loading a model (tests, scripts).
    """

    def __init__(
        self,
        napari_viewer: Any,
        predictor: Any = None,
        prefetch_radius: int = 2,
        model_name: str = "custom",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.model = AnnotatorModel(napari_viewer, predictor, prefetch_radius=prefetch_radius)
        self._build()
        self._connect()
        self._refresh_layers(attach=True)
        self._load_default_model(predictor, model_name)

    # ---------------------------------------------------------------- layout
    def _build(self) -> None:
        self.image_combo, self.labels_combo = QComboBox(), QComboBox()
        self.model_combo, self.window_combo = QComboBox(), QComboBox()
        self.window_combo.addItems(list(WINDOW_CHOICES))
        self.point_btn, self.box_btn = QPushButton("Point"), QPushButton("Box")
        self.scribble_btn, self.lasso_btn = QPushButton("Scribble"), QPushButton("Lasso")
        self.negative_check = QCheckBox("Negative (N)")
        self.id_spin = QSpinBox()
        self.id_spin.setRange(0, 65535)
        self.id_spin.setSpecialValueText("auto")
        self.policy_combo = QComboBox()
        self.policy_combo.addItems([KEEP, OVERWRITE])
        self.accept_btn, self.next_btn = QPushButton("Accept"), QPushButton("Next object")
        self.undo_btn, self.redo_btn = QPushButton("Undo"), QPushButton("Redo")
        self.propagate_btn, self.cancel_btn = QPushButton("Propagate"), QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.volume = VolumePanel(
            self.model, self._run, lambda: self._selected_id(None), _key_text
        )  # fill between, propagate all
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m slices")  # the model's ``task`` names the run
        self.progress.setVisible(False)
        tips = {
            "accept": (self.accept_btn, "Commit the current object into the labels"),
            "next": (self.next_btn, "Drop the prompts; the next prompt starts a new object"),
            "propagate": (
                self.propagate_btn,
                "Follow the object from the shown slice through the volume",
            ),
            "points": (self.point_btn, "Click positive points (negative with N)"),
            "box": (self.box_btn, "Drag a box around the object"),
            "scribble": (
                self.scribble_btn,
                "Draw over the object (negative with N: over what is not the object)",
            ),
            "lasso": (
                self.lasso_btn,
                "Draw around the object (negative with N: around a part to leave out)",
            ),
            "negative": (
                self.negative_check,
                "New points and strokes are negative (placed ones keep theirs)",
            ),
            "undo": (self.undo_btn, "Undo the last prompt, commit or delete"),
            "redo": (self.redo_btn, "Redo"),
        }
        for action, (w, tip) in tips.items():
            w.setToolTip(f"{tip} ({_key_text(SHORTCUTS[action])})")
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["id", "name", "slices", "mL"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        for col in range(4):
            mode = (
                QHeaderView.ResizeMode.Stretch
                if col == 1
                else QHeaderView.ResizeMode.ResizeToContents
            )
            header.setSectionResizeMode(col, mode)
        self.reopen_btn, self.delete_btn = QPushButton("Reopen"), QPushButton("Delete")
        self.islands_btn = QPushButton("Remove islands")
        self.islands_btn.setToolTip(
            "Keep the largest connected part of the selected object (or of the preview)"
        )
        for w in (self.reopen_btn, self.delete_btn):
            w.setEnabled(False)  # until an object is selected in the list
        self.files = SessionPanel(self.model, self._run)  # name, sessions, export, recovery
        self.store_btn, self.store_clear_btn = QPushButton(NO_STORE), QPushButton("Clear")
        self.store_btn.setToolTip(
            "A store of precomputed embeddings (hrmedsegsam embed ... --store DIR.zarr), "
            "read before the encoder runs"
        )
        self.status = QLabel(self.model.status)
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("Window", self.window_combo)
        store_row = QHBoxLayout()
        store_row.addWidget(self.store_btn, 1)
        store_row.addWidget(self.store_clear_btn)
        form.addRow("Embeddings", store_row)
        prompts = QGroupBox("Prompts")
        row = QHBoxLayout(prompts)
        for w in (
            self.point_btn,
            self.box_btn,
            self.scribble_btn,
            self.lasso_btn,
            self.negative_check,
        ):
            row.addWidget(w)
        target = QHBoxLayout()
        target.addWidget(QLabel("Label id"))
        target.addWidget(self.id_spin)
        target.addWidget(self.policy_combo)
        grid = QGridLayout()
        buttons = (self.accept_btn, self.next_btn, self.undo_btn, self.redo_btn)
        for i, w in enumerate(buttons + (self.propagate_btn, self.cancel_btn)):
            grid.addWidget(w, i // 2, i % 2)
        obj_box = QGroupBox("Objects")
        obj_layout = QVBoxLayout(obj_box)
        obj_layout.addWidget(self.table)
        obj_row = QHBoxLayout()
        obj_row.addWidget(self.reopen_btn)
        obj_row.addWidget(self.delete_btn)
        obj_row.addWidget(self.islands_btn)
        obj_layout.addLayout(obj_row)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(prompts)
        layout.addLayout(target)
        layout.addLayout(grid)
        layout.addWidget(self.volume)
        layout.addWidget(self.progress)
        layout.addWidget(obj_box)
        layout.addWidget(self.files)
        layout.addWidget(self.status)

    # ---------------------------------------------------------------- wiring
    def _connect(self) -> None:
        m = self.model
        self.image_combo.activated.connect(
            lambda _: self._run(m.set_image_layer, self._chosen_image())
        )
        self.labels_combo.activated.connect(
            lambda _: self._run(m.set_labels_layer, self._chosen_labels())
        )
        self.model_combo.activated.connect(
            lambda _: self._run(m.load_model, self.model_combo.currentText())
        )
        self.window_combo.currentTextChanged.connect(
            lambda text: self._run(m.set_window_choice, text)
        )
        self.store_btn.clicked.connect(self.choose_store)
        self.store_clear_btn.clicked.connect(lambda: self._set_store(None))
        self.point_btn.clicked.connect(lambda: self._run(m.use_tool, "points"))
        self.box_btn.clicked.connect(lambda: self._run(m.use_tool, "box"))
        self.scribble_btn.clicked.connect(lambda: self._run(m.use_tool, "scribble"))
        self.lasso_btn.clicked.connect(lambda: self._run(m.use_tool, "lasso"))
        self.negative_check.toggled.connect(lambda on: self._run(m.set_negative, on))
        self.id_spin.valueChanged.connect(lambda v: setattr(m, "target_id", int(v)))
        self.policy_combo.currentTextChanged.connect(
            lambda t: setattr(m, "overwrite", t == OVERWRITE)
        )
        self.accept_btn.clicked.connect(lambda: self._run(m.accept))
        self.next_btn.clicked.connect(lambda: self._run(m.next_object))
        self.undo_btn.clicked.connect(lambda: self._run(m.undo))
        self.redo_btn.clicked.connect(lambda: self._run(m.redo))
        self.propagate_btn.clicked.connect(lambda: self._run(m.propagate))
        self.cancel_btn.clicked.connect(lambda: self._run(m.cancel))
        self.reopen_btn.clicked.connect(lambda: self._run(lambda: m.reopen(self._selected_id())))
        self.delete_btn.clicked.connect(
            lambda: self._run(lambda: m.delete_object(self._selected_id()))
        )
        self.islands_btn.clicked.connect(
            lambda: self._run(lambda: m.keep_largest(self._selected_id(None)))
        )
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.itemSelectionChanged.connect(self._on_selection_changed)

        self._objects_timer = QTimer(self, singleShot=True, interval=150)
        self._objects_timer.timeout.connect(self._refresh_objects)
        m.events.status.connect(lambda e: self.status.setText(e.value))
        m.events.objects.connect(lambda e: self._objects_timer.start())
        m.events.history.connect(lambda e: self._refresh_history())
        m.events.propagating.connect(lambda e: self._set_propagating(e.value))
        m.events.task.connect(lambda e: self._show_task(e.value))
        m.events.progress.connect(lambda e: self._on_progress(*e.value))
        self.viewer.layers.events.inserted.connect(
            lambda e: self._run(m.on_layer_inserted, e.value)
        )
        self.viewer.layers.events.inserted.connect(lambda e: self._refresh_layers(attach=True))
        self.viewer.layers.events.removed.connect(lambda e: self._run(m.sync_with_layers))
        self.viewer.layers.events.removed.connect(lambda e: self._refresh_layers())

        actions = {
            "undo": m.undo,
            "redo": m.redo,
            "negative": self.negative_check.toggle,
            "accept": m.accept,
            "next": m.next_object,
            "propagate": m.propagate,
            "points": lambda: m.use_tool("points"),
            "box": lambda: m.use_tool("box"),
            "scribble": lambda: m.use_tool("scribble"),
            "lasso": lambda: m.use_tool("lasso"),
        }
        self._bindings = {
            SHORTCUTS[a]: (lambda v, fn=fn: self._run(fn)) for a, fn in actions.items()
        }
        self._bindings.update(
            {k: (lambda v, fn=fn: fn()) for k, fn in self.volume.bindings().items()}
        )
        for key, fn in self._bindings.items():
            self.viewer.bind_key(key, fn, overwrite=True)
        m.labels_keys = {SHORTCUTS[a]: self._bindings[SHORTCUTS[a]] for a in ("undo", "redo")}
        m.bind_labels_keys()
        for action, fn in actions.items():
            shortcut = QShortcut(QKeySequence(_key_text(SHORTCUTS[action])), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda fn=fn: self._run(fn))

    def _load_default_model(self, predictor: Any, name: str) -> None:
        """Loads the default model, or shows ``name`` for a given ``predictor``."""
        from hrmedsegsam import available_models

        names = available_models()
        if predictor is not None and name not in names:
            names.append(name)
        self.model_combo.addItems(names)
        if predictor is None:
            self._run(self.model.load_model, self.model_combo.currentText())
        else:
            self.model_combo.setCurrentText(name)
            self.model.model_name = name

    def choose_store(self) -> None:
        """Ask for an embeddings store folder (the files panel's dialog hook) and use it."""
        path, _ = self.files.ask_path("folder", "Embeddings store (a .zarr folder)")
        if path:
            self._set_store(path)

    def _set_store(self, path: str | None) -> None:
        self._run(self.model.set_store, path)
        store = self.model.store
        self.store_btn.setText(Path(str(store.path)).name if store is not None else NO_STORE)

    # ---------------------------------------------------------------- helpers
    def _run(self, fn: Callable, *args: Any) -> Any:
        """Calls a model action; a library error goes to the status line and a notification."""
        try:
            return fn(*args)
        except HRMedSegSAMError as exc:
            self.status.setText(str(exc))
            from napari.utils.notifications import show_warning

            show_warning(str(exc))
            return None

    def _layers_of(self, kind: str) -> list:
        from napari.layers import Image, Labels

        cls = Image if kind == "image" else Labels
        return [lay for lay in self.viewer.layers if isinstance(lay, cls) and role(lay) is None]

    def _chosen_image(self) -> Any:
        return self._by_name("image", self.image_combo.currentText())

    def _chosen_labels(self) -> Any:
        return self._by_name("labels", self.labels_combo.currentText())

    def _by_name(self, kind: str, name: str) -> Any:
        return next((lay for lay in self._layers_of(kind) if lay.name == name), None)

    def _refresh_layers(self, attach: bool = False) -> None:
        """Refills the layer choices; with ``attach``, annotates the newest image if none is."""
        for combo, kind, current in (
            (self.image_combo, "image", self.model.image_layer),
            (self.labels_combo, "labels", self.model.labels_layer),
        ):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([lay.name for lay in self._layers_of(kind)])
            if current is not None:
                combo.setCurrentText(current.name)
            combo.blockSignals(False)
        images = self._layers_of("image")
        if attach and self.model.image_layer is None and not self.model.rebuilding and images:
            self._run(self.model.set_image_layer, images[-1])
            self._refresh_layers(attach=False)

    def _refresh_objects(self) -> None:
        self.table.blockSignals(True)
        objects = self.model.objects()
        self.table.setRowCount(len(objects))
        for row, o in enumerate(objects):
            cells = (str(o.id), o.name, f"{o.z_min}-{o.z_max} ({o.slices})", f"{o.volume_ml:.2f}")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col != 1:
                    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                else:
                    item.setData(Qt.ItemDataRole.DecorationRole, QColor(*o.color))
                self.table.setItem(row, col, item)
        self.table.blockSignals(False)
        self.files.keeper.show_objects(objects)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        self._run(self.model.rename, int(self.table.item(item.row(), 0).text()), item.text())

    def _on_selection_changed(self) -> None:
        selected = bool(self.table.selectionModel().selectedRows())
        for w in (self.reopen_btn, self.delete_btn):
            w.setEnabled(selected)

    def _selected_id(self, default: Any = ...) -> Any:
        """The id of the selected object; without a selection ``default``, or an error."""
        rows = self.table.selectionModel().selectedRows()
        if not rows and default is not ...:
            return default
        if not rows:
            raise HRMedSegSAMError("Select an object in the list first.")
        return int(self.table.item(rows[0].row(), 0).text())

    def _refresh_history(self) -> None:
        session = self.model.session
        self.undo_btn.setEnabled(bool(session and session.can_undo))
        self.redo_btn.setEnabled(bool(session and session.can_redo))

    def _show_task(self, title: str) -> None:
        """The bar says what runs, e.g. ``"Filling liver between slices 12 and 30: 3 of 17
        slices"``; it keeps the label after the run, the status line says why it stopped.
        """
        self.progress.setFormat(f"{title}: %v of %m slices")

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(1, total))
        self.progress.setValue(min(done, total))

    def _set_propagating(self, on: bool) -> None:
        self.progress.setVisible(on)
        if on:
            self.progress.setValue(0)
        self.cancel_btn.setEnabled(on)
        for w in (self.accept_btn, self.propagate_btn, self.undo_btn, self.redo_btn):
            w.setEnabled(not on)
        self.volume.set_running(on)
        if not on:
            self._refresh_history()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.files.keeper.close()
        self.model.close()
        super().closeEvent(event)
