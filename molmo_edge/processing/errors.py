"""The error raised for unusable inputs to the processor (images, frames, timestamps, text).

It derives from `MolmoEdgeError` (so the CLI prints it as one line) and from `ValueError` (so
callers that already catch ValueError keep working).
"""
from __future__ import annotations

from molmo_edge.errors import MolmoEdgeError


class InputError(MolmoEdgeError, ValueError):
    """An image, frame list, timestamp list or prompt that the processor cannot use."""
