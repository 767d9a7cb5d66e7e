"""Error types that front ends (CLI, napari widget) turn into one clear message.

Every failure caused by the user's input (paths, files, prompts, weights) raises a subclass
of :class:`HRMedSegSAMError` whose message is a complete sentence meant to be shown as is.
"""

from __future__ import annotations


class HRMedSegSAMError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class InputError(HRMedSegSAMError, ValueError):
    """A path, file or volume that cannot be used (missing, not an image, 4D/RGB, ...)."""


class PromptError(HRMedSegSAMError, ValueError):
    """A prompt that cannot be used (outside the image, empty box, malformed JSON, ...)."""


class WeightsError(HRMedSegSAMError, RuntimeError):
    """Model weights missing, corrupt, or not matching the architecture."""


class OutputExistsError(HRMedSegSAMError, FileExistsError):
    """The output file exists and overwriting was not requested."""
