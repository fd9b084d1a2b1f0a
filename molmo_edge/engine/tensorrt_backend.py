"""The TensorRT backend: a bundle's TensorRT engines behind the Backend interface.

    backend = TensorRTBackend.from_bundle("bundle/")          # needs TensorRT 10+, a CUDA GPU, and
                                                             # engines built by `molmo-edge export --trt`

The engines are those of `molmo_edge.export.trt_engines` and take the inputs of `graph_io`, as
torch CUDA tensors that TensorRT reads and writes in place (`export.tensorrt_runtime`). The KV
cache stays on the GPU: each step's `present_*` tensors are the next step's `past_*`. Logits come
back to the host as float32 [V]; visual tokens stay on the GPU (`device`), ready for `prefill`.

Engine limits come from their optimisation profiles: the ViT takes at most a profile's worth of
crops per call (longer videos are encoded in chunks of whole frames), and a sequence holds at
most the decoder profile's `total_seq` tokens (`max_context_tokens`).

TensorRT is imported only here and only when a backend is built; without it (or without a GPU)
`from_bundle` raises BackendUnavailableError saying what to install.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from molmo_edge.engine import graph_io as io
from molmo_edge.engine.backend import (Backend, BackendState, check_decode_input, check_encode_inputs,
                                       check_prefill_inputs, drop_padding_rows)
from molmo_edge.errors import BackendUnavailableError, BundleError, InputError, MolmoEdgeError
from molmo_edge.model.inputs import visual_token_index

if TYPE_CHECKING:  # pragma: no cover
    from molmo_edge.export.bundle import Bundle

log = logging.getLogger(__name__)


def crop_chunks(pooling: torch.Tensor, n_crops: int, patches_per_crop: int,
                max_crops: int) -> list[tuple[int, int, int, int]]:
    """Split one encode call into calls of at most `max_crops` crops, never splitting a pooling window.

    pooling [T, K] indexes the flattened [n_crops · P] patches (video: frame by frame; an image:
    its global crop, then tiles whose windows may straddle neighbouring tiles). Returns
    (first_crop, end_crop, first_row, end_row) per chunk: rows first_row..end_row of `pooling` read
    only crops first_crop..end_crop. InputError when no such split exists (a window spanning more
    crops than the engine takes, or rows not ordered by crop).
    """
    n_rows = int(pooling.shape[0])
    if n_crops <= max_crops:
        return [(0, n_crops, 0, n_rows)]
    valid = pooling >= 0
    first = torch.where(valid, pooling, torch.iinfo(torch.int64).max).min(dim=1).values // patches_per_crop  # [T]
    last = torch.where(valid, pooling, -1).max(dim=1).values // patches_per_crop  # [T]
    chunks: list[tuple[int, int, int, int]] = []
    start_crop, start_row, highest = 0, 0, -1
    for row in range(n_rows):
        if not bool(valid[row].any()):
            continue  # an all-padding row reads nothing; it goes with the open chunk
        lo, hi = int(first[row]), int(last[row])
        if hi - lo + 1 > max_crops:
            raise InputError(f"a pooling window spans crops {lo}..{hi}, more than the {max_crops} crops this "
                             "TensorRT engine takes per call; rebuild the engines with a larger profile")
        if lo < start_crop:
            raise InputError("the pooling rows are not ordered by crop; pass the index the processor built")
        if hi + 1 - start_crop > max_crops:
            if highest >= lo:
                raise InputError(f"cannot encode {n_crops} crops in calls of {max_crops}: neighbouring pooling "
                                 "windows share crops; rebuild the engines with a larger profile")
            chunks.append((start_crop, highest + 1, start_row, row))
            start_crop, start_row = lo, row
        highest = max(highest, hi)
    end_crop = highest + 1 if highest >= 0 else min(n_crops, start_crop + max_crops)
    chunks.append((start_crop, end_crop, start_row, n_rows))
    return chunks


@dataclass
class TensorRTState(BackendState):
    """The decode state: past key/value CUDA tensors [1, Hkv, length, hd], in graph_io order."""

    past: list[torch.Tensor] = field(default_factory=list)


class TensorRTBackend(Backend):
    """Runs a bundle's TensorRT engines (see the module docstring)."""

    name = "tensorrt"

    def __init__(self, bundle: "Bundle", device: torch.device | str | None = None) -> None:
        from molmo_edge.export.tensorrt import import_tensorrt
        from molmo_edge.export.tensorrt_runtime import TensorRTEngine
        from molmo_edge.export.trt_engines import engine_max_context
        from molmo_edge.model.config import Molmo2Config
        from molmo_edge.processing.processor import Processor

        import_tensorrt()  # BackendUnavailableError with install instructions
        if not torch.cuda.is_available():
            raise BackendUnavailableError("the TensorRT backend needs a CUDA GPU and torch.cuda reports none; use the "
                                          "ONNX Runtime backend (--backend onnx)")
        self.device = torch.device(device) if device is not None else torch.device("cuda")
        if self.device.type != "cuda":
            raise BackendUnavailableError(f"TensorRT engines run on CUDA devices, not {self.device}; use the ONNX "
                                          "Runtime backend for the CPU")
        self.bundle = bundle
        self.config = Molmo2Config.from_hf_dict(bundle.manifest.config)
        self.processor = Processor.from_pretrained(bundle.path)
        self.engines = {}
        for name in io.GRAPH_NAMES:
            spec = bundle.engine_for_graph(name)
            if spec is None:
                raise BundleError(f"{bundle.path} has no TensorRT engine for the {name} graph; build them on this "
                                  "device with `molmo-edge export --trt`, or use the ONNX Runtime backend")
            self.engines[name] = TensorRTEngine(bundle.path / spec.file, spec, device=str(self.device))
        vit_profiles = self.engines[io.VIT].profiles
        self.max_crops_per_call = min((p.shapes["pixel_values"].max[0] for p in vit_profiles), default=1 << 30)
        self._max_context = engine_max_context(self.engines[io.DECODER].profiles) or \
            self.config.text.max_position_embeddings
        log.info("tensorrt backend: %s on %s", bundle.path, torch.cuda.get_device_name(self.device))

    @classmethod
    def from_bundle(cls, folder: str | Path, device: torch.device | str | None = None) -> "TensorRTBackend":
        """Open and check a bundle folder (sha256 of every file), then load its engines."""
        from molmo_edge.export.bundle import open_bundle
        from molmo_edge.export.tensorrt import import_tensorrt

        import_tensorrt()  # before hashing gigabytes: fail fast when TensorRT is missing
        return cls(open_bundle(folder, verify=True), device=device)

    @property
    def max_context_tokens(self) -> int:
        return min(self._max_context, self.config.text.max_position_embeddings)

    # ----- the interface -------------------------------------------------------------------
    @torch.inference_mode()
    def encode_visual(self, pixel_values: torch.Tensor, pooling: torch.Tensor) -> torch.Tensor:
        check_encode_inputs(pixel_values, pooling, self.config)
        pixels = pixel_values.to(self.device, torch.float32)
        pooling = pooling.to("cpu", torch.int64)
        if pooling.shape[0] == 0:
            return torch.zeros(0, self.hidden_size, device=self.device)
        patches = self.config.vision.num_patches
        pieces = []
        for first_crop, end_crop, first_row, end_row in crop_chunks(pooling, pixels.shape[0], patches,
                                                                    self.max_crops_per_call):
            features = self._run(io.VIT, pixel_values=pixels[first_crop:end_crop].contiguous())["features"]
            rows = pooling[first_row:end_row]
            local = torch.where(rows >= 0, rows - first_crop * patches, rows)  # indices into this chunk
            pieces.append(self._run(io.CONNECTOR, features=features, pooling=local.to(self.device))["visual_tokens"])
        return drop_padding_rows(torch.cat(pieces), pooling)

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, visual_tokens: torch.Tensor | None,
                mm_token_type_ids: torch.Tensor) -> tuple[torch.Tensor, TensorRTState]:
        check_prefill_inputs(input_ids, visual_tokens, mm_token_type_ids, self.config, self.max_context_tokens)
        feeds = {k: torch.from_numpy(v) for k, v in
                 io.prefill_feeds(input_ids, None, mm_token_type_ids, self.config).items()}
        if visual_tokens is not None and visual_tokens.shape[0]:
            # the cached tokens stay on the GPU; only the gather index is built on the host
            feeds["visual_tokens"] = visual_tokens.to(self.device, torch.float32)
            feeds["visual_index"] = visual_token_index(input_ids.to("cpu", torch.int64), self.config.image_patch_id)
        empty = io.kv_shape(self.config, 0)
        for name in io.past_names(self.config.text.num_hidden_layers):
            feeds[name] = torch.zeros(empty, device=self.device)
        return self._decoder(feeds, int(input_ids.shape[1]))

    @torch.inference_mode()
    def decode(self, token_id: int, state: BackendState) -> tuple[torch.Tensor, TensorRTState]:
        if not isinstance(state, TensorRTState):
            raise TypeError("decode needs the state returned by this backend's prefill or decode")
        check_decode_input(token_id, state, self.vocab_size, self.max_context_tokens)
        feeds = {k: torch.from_numpy(v) for k, v in io.extend_feeds([int(token_id)], state.length, self.config).items()}
        feeds.update(zip(io.past_names(self.config.text.num_hidden_layers), state.past))
        return self._decoder(feeds, state.length + 1)

    def close(self) -> None:
        for engine in getattr(self, "engines", {}).values():
            engine.close()
        self.engines = {}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ----- internals ------------------------------------------------------------------------
    def _run(self, name: str, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.engines:
            raise MolmoEdgeError("this TensorRT backend was closed; load the bundle again")
        return self.engines[name].run(inputs)

    def _decoder(self, feeds: dict[str, torch.Tensor], new_length: int) -> tuple[torch.Tensor, TensorRTState]:
        outputs = self._run(io.DECODER, **feeds)
        logits = outputs["logits"][0].to("cpu", torch.float32)  # [V]; synchronises the stream
        past = [outputs[name] for name in io.present_names(self.config.text.num_hidden_layers)]
        return logits, TensorRTState(length=new_length, past=past)


__all__ = ["TensorRTBackend", "TensorRTState", "crop_chunks"]
