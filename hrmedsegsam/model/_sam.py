"""Import ``segment_anything.modeling`` without running ``segment_anything/__init__.py``.

The package ``__init__`` imports the automatic mask generator, which imports torchvision;
there is no CPU build of torchvision on our machines, and the registry's build fails at
import with CPU torch. ``segment_anything.modeling`` itself needs only torch. When the
normal import fails we register a bare package module whose ``__path__`` is the installed
package directory, so that submodule imports work without executing its ``__init__``.
This is the only place in the code base that deals with that.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from types import ModuleType


def sam_modeling() -> ModuleType:
    """Return the ``segment_anything.modeling`` module (PromptEncoder, MaskDecoder, ...)."""
    if "segment_anything.modeling" in sys.modules:
        return sys.modules["segment_anything.modeling"]
    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                "The 'segment-anything' package is not installed: pip install segment-anything"
            )
        bare = types.ModuleType("segment_anything")
        bare.__path__ = list(spec.submodule_search_locations)
        bare.__file__ = spec.origin
        sys.modules["segment_anything"] = bare
    return importlib.import_module("segment_anything.modeling")
