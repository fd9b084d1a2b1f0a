"""TensorRT INT8 entropy calibration fed by the same input dicts as the ONNX Runtime reader.

TensorRT 10's implicit INT8 path asks a calibrator for batches (`get_batch` returns device
pointers, one per network input, in the order of `names`) and stores the resulting scale table
through `write_calibration_cache`, so later builds skip calibration. Two pieces are plain Python:
- `DeviceBatchFeeder` copies one input dict at a time to (CUDA) tensors and keeps them alive
  until the next request, since TensorRT reads the memory after `get_batch` returns;
- `CalibrationCache` stores the table next to the sha256 of the graph it was measured on: a table
  from a different graph silently gives wrong scales, so a mismatching cache is ignored.
`make_entropy_calibrator` binds them to `trt.IInt8EntropyCalibrator2` (deprecated since TensorRT
10.1 and gone in 11, where Q/DQ graphs from `quantize.quantize_static_int8` are the way).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from molmo_edge.errors import ConfigError
from molmo_edge.export.atomic import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)


class CalibrationCache:
    """A TensorRT calibration table on disk, valid only for the graph with sha256 `graph_sha256`."""

    def __init__(self, path: str | Path, graph_sha256: str | None = None):
        self.path = Path(path)
        self.graph_sha256 = graph_sha256

    @property
    def sidecar_path(self) -> Path:
        return self.path.with_name(self.path.name + ".json")

    def read(self) -> bytes | None:
        """The stored table, or None when absent, empty, or made for another graph."""
        if not self.path.is_file():
            return None
        if self.graph_sha256 is not None:
            try:
                stored = json.loads(self.sidecar_path.read_text(encoding="utf-8")).get("graph_sha256")
            except (OSError, ValueError, AttributeError):
                stored = None
            if stored != self.graph_sha256:
                log.warning("ignoring calibration cache %s: it was made for another graph (sha256 %s, now %s)",
                            self.path, stored, self.graph_sha256)
                return None
        data = self.path.read_bytes()
        return data or None

    def write(self, data) -> None:
        """Store a table (any bytes-like object) and the fingerprint of its graph."""
        atomic_write_bytes(self.path, bytes(data))
        atomic_write_text(self.sidecar_path, json.dumps({"graph_sha256": self.graph_sha256}) + "\n")


class DeviceBatchFeeder:
    """Hands out calibration samples as device pointers, ordered like the requested input names.

    `device` is a torch device string ("cuda" for TensorRT; "cpu" works for inspection).
    """

    def __init__(self, inputs: Iterable[dict[str, np.ndarray]], device: str = "cuda"):
        self.inputs = inputs
        self.device = device
        self._iterator: Iterator[dict[str, np.ndarray]] | None = None
        self._alive: list = []  # tensors TensorRT is reading; released at the next request
        self.batches_served = 0

    def next_pointers(self, names: list[str]) -> list[int] | None:
        """Device pointers of the next sample's inputs in `names` order, or None when the data is exhausted."""
        import torch

        if self._iterator is None:
            self._iterator = iter(self.inputs)
        sample = next(self._iterator, None)
        self._alive = []
        if sample is None:
            return None
        missing = [name for name in names if name not in sample]
        if missing:
            raise ConfigError(f"calibration sample lacks the network inputs {missing} (it has {sorted(sample)})")
        tensors = [torch.from_numpy(np.ascontiguousarray(sample[name])).to(self.device) for name in names]
        self._alive = tensors
        self.batches_served += 1
        return [int(t.data_ptr()) for t in tensors]


def make_entropy_calibrator(inputs: Iterable[dict[str, np.ndarray]], cache: CalibrationCache | str | Path | None = None,
                            device: str = "cuda"):
    """A `trt.IInt8EntropyCalibrator2` over input dicts (e.g. `molmo_edge.calibration.int8.CalibrationInputs`).

    With an existing, matching cache TensorRT reads the table and never asks for batches.
    """
    from molmo_edge.export.tensorrt import import_tensorrt

    trt = import_tensorrt()
    if cache is not None and not isinstance(cache, CalibrationCache):
        cache = CalibrationCache(cache)
    feeder = DeviceBatchFeeder(inputs, device=device)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.feeder = feeder
            self.cache = cache

        def get_batch_size(self) -> int:
            # Networks are explicit-batch: each sample already has its full shape.
            return 1

        def get_batch(self, names):
            return self.feeder.next_pointers(list(names))

        def read_calibration_cache(self):
            return self.cache.read() if self.cache is not None else None

        def write_calibration_cache(self, table) -> None:
            if self.cache is not None:
                self.cache.write(memoryview(table).tobytes() if not isinstance(table, bytes) else table)

    return EntropyCalibrator()
