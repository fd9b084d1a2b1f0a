"""Errors meant for users: each says what was wrong and, where it can, what to do about it.

The CLI prints these as one line (no traceback) and exits with code 2.
"""
from __future__ import annotations


class MolmoEdgeError(Exception):
    """Base class of every error molmo-edge raises on purpose."""


class ConfigError(MolmoEdgeError, ValueError):
    """A configuration (config.json, YAML, CLI flags, ROS parameters) that cannot be used."""


class CheckpointError(MolmoEdgeError):
    """A checkpoint folder that cannot be loaded: no weights, unknown layout, shape mismatch, pickle."""


class BundleError(MolmoEdgeError):
    """An exported bundle that does not match its manifest, or is incomplete."""


class BackendUnavailableError(MolmoEdgeError):
    """A backend whose library is not installed here (e.g. TensorRT on a machine without it)."""


class SourceError(MolmoEdgeError):
    """A video source that cannot be opened or has gone away."""


class InputError(MolmoEdgeError, ValueError):
    """An image, frame list, timestamp list or prompt that cannot be used as model input."""
