"""The error raised for unusable inputs to the processor (images, frames, timestamps, text).

Defined in `molmo_edge.errors` with the other user-facing errors; re-exported here so that the
processing modules keep one local import.
"""
from molmo_edge.errors import InputError

__all__ = ["InputError"]
