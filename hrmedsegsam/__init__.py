"""HRMedSegSAM: interactive high-resolution medical image segmentation.

The stable API (see DESIGN §5)::

    from hrmedsegsam import read_volume, write_labels, load_model, Predictor

Importing this package is cheap: torch (and never napari/Qt) is only imported when a model
or predictor is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Predictor",
    "Prediction",
    "Volume",
    "load_model",
    "available_models",
    "InteractiveAnnotation",
    "read_volume",
    "write_labels",
    "resample_labels_to",
    "propagate",
    "__version__",
]

_LAZY = {
    "Volume": "hrmedsegsam.io",
    "read_volume": "hrmedsegsam.io",
    "write_labels": "hrmedsegsam.io",
    "resample_labels_to": "hrmedsegsam.io",
    "load_model": "hrmedsegsam.model.build",
    "available_models": "hrmedsegsam.model.build",
    "InteractiveAnnotation": "hrmedsegsam.interactive",
    "Predictor": "hrmedsegsam.predictor",
    "Prediction": "hrmedsegsam.predictor",
    "propagate": "hrmedsegsam.volume",
}

if TYPE_CHECKING:  # pragma: no cover
    from hrmedsegsam.interactive import InteractiveAnnotation
    from hrmedsegsam.io import Volume, read_volume, resample_labels_to, write_labels
    from hrmedsegsam.model.build import available_models, load_model
    from hrmedsegsam.predictor import Prediction, Predictor
    from hrmedsegsam.volume import propagate


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'hrmedsegsam' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
