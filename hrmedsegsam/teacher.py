"""Old home of the LiteMedSAM reference model, now :mod:`hrmedsegsam.model.litemedsam`.

Kept only because ``training/commands.py`` (being rewritten for issue 12) still imports
``load_litemedsam`` from here; delete this module once it imports from
``hrmedsegsam.model.litemedsam``.
"""

from hrmedsegsam.model.litemedsam import LiteMedSAM, is_available, load_litemedsam

__all__ = ["LiteMedSAM", "is_available", "load_litemedsam"]
