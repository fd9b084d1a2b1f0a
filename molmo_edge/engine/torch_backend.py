"""The PyTorch backend: `Molmo2ForConditionalGeneration` behind the Backend interface.

Eager mode on any device and dtype, optionally with bitsandbytes int8 / NF4 decoder weights. It
uses the model's own pieces (`encode_images` for ViT + connector, `forward(visual_tokens=...)`
with its KV cache), so it is the numeric reference for the exported backends.

    backend = TorchBackend.from_checkpoint("path/to/checkpoint", device="cuda", dtype="bfloat16")
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from molmo_edge.engine.backend import (Backend, BackendState, check_decode_input, check_encode_inputs,
                                       check_prefill_inputs)
from molmo_edge.errors import MolmoEdgeError
from molmo_edge.model.decoder import KVCache
from molmo_edge.model.molmo2 import Molmo2ForConditionalGeneration
from molmo_edge.processing.processor import Processor

log = logging.getLogger(__name__)


@dataclass
class TorchState(BackendState):
    """The decode state of the torch backend: the model's KV cache, per layer (k, v) [1, Hkv, length, hd]."""

    past_key_values: KVCache | None = None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """float32 on the CPU (fast there, exact); bfloat16 on GPUs that have it, else float16."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class TorchBackend(Backend):
    """Runs an in-memory `Molmo2ForConditionalGeneration` (see the module docstring)."""

    name = "torch"

    def __init__(self, model: Molmo2ForConditionalGeneration, processor: Processor,
                 quantization_report=None) -> None:
        self.model = model.eval()
        self.config = model.config
        self.processor = processor
        self.device = model.device
        #: `quantization.QuantizationReport` when the decoder weights were quantised, else None
        self.quantization_report = quantization_report

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: torch.device | str | None = None,
                        dtype: torch.dtype | str | None = None, quantization: str | None = None) -> "TorchBackend":
        """Load a checkpoint folder. device None = CUDA when available, else CPU; dtype None = see
        `default_dtype`; quantization None, "int8" or "nf4" (bitsandbytes, ViT and connector kept)."""
        from molmo_edge.model.checkpoint import load_checkpoint, resolve_dtype

        target = torch.device(device) if device is not None else default_device()
        target_dtype = resolve_dtype(dtype) if dtype is not None else default_dtype(target)
        processor = Processor.from_pretrained(folder)
        report = None
        if quantization is None:
            model = load_checkpoint(folder, dtype=target_dtype, device=target)
        else:
            from molmo_edge.engine.quantization import quantize_model

            # Load on the CPU: bitsandbytes quantises a weight while moving it from the CPU to its device,
            # and the float copy of the big decoder never has to fit on the accelerator.
            model = load_checkpoint(folder, dtype=target_dtype, device="cpu")
            report = quantize_model(model, quantization, device=target)
            model.to(target)  # the layers left in float (embeddings, norms, lm_head, ViT, connector)
            log.info("quantized %d Linear layers to %s: %.1f MB -> %.1f MB", report.n_quantized, quantization,
                     report.float_bytes / 1e6, report.quantized_bytes / 1e6)
        return cls(model, processor, quantization_report=report)

    # ----- the interface -------------------------------------------------------------------
    @torch.inference_mode()
    def encode_visual(self, pixel_values: torch.Tensor, pooling: torch.Tensor) -> torch.Tensor:
        check_encode_inputs(pixel_values, pooling, self.config)
        # pixels [N, P, ps²·3], pooling [T, K] -> [T', D] in the model dtype on self.device
        return self._live_model().encode_images(pixel_values.to(self.device), pooling.to(self.device))

    def prefill(self, input_ids: torch.Tensor, visual_tokens: torch.Tensor | None,
                mm_token_type_ids: torch.Tensor) -> tuple[torch.Tensor, TorchState]:
        check_prefill_inputs(input_ids, visual_tokens, mm_token_type_ids, self.config, self.max_context_tokens)
        if visual_tokens is not None and visual_tokens.shape[0] == 0:
            visual_tokens = None
        with torch.inference_mode():
            out = self._live_model()(input_ids.to(self.device, torch.long),
                                     mm_token_type_ids=mm_token_type_ids.to(self.device, torch.long),
                                     visual_tokens=None if visual_tokens is None else visual_tokens.to(self.device),
                                     logits_to_keep=1)
        state = TorchState(length=int(input_ids.shape[1]), past_key_values=out.past_key_values)
        return self._cpu_logits(out.logits), state

    def decode(self, token_id: int, state: BackendState) -> tuple[torch.Tensor, TorchState]:
        if not isinstance(state, TorchState) or state.past_key_values is None:
            raise TypeError("decode needs the state returned by this backend's prefill or decode")
        check_decode_input(token_id, state, self.vocab_size, self.max_context_tokens)
        token = torch.tensor([[int(token_id)]], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            # position = state.length (the model derives it from the cache length); plain causal mask
            out = self._live_model()(token, past_key_values=state.past_key_values, logits_to_keep=1)
        return self._cpu_logits(out.logits), TorchState(length=state.length + 1,
                                                         past_key_values=out.past_key_values)

    def close(self) -> None:
        """Drop the model; on CUDA, return its cached memory to the driver."""
        model, self.model = getattr(self, "model", None), None
        del model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ----- internals ------------------------------------------------------------------------
    def _live_model(self) -> Molmo2ForConditionalGeneration:
        if self.model is None:
            raise MolmoEdgeError("this torch backend was closed; load the model again")
        return self.model

    @staticmethod
    def _cpu_logits(logits: torch.Tensor) -> torch.Tensor:
        # [1, 1, V] -> [V] float32 on the CPU (a device sync: timings measured around this are real).
        # Copied outside inference mode on purpose: callers get an ordinary tensor they may edit in place
        # (penalties, masks); the KV cache stays an inference tensor, only this backend touches it.
        return logits[0, -1].to(device="cpu", dtype=torch.float32, copy=True)


__all__ = ["TorchBackend", "TorchState", "default_device", "default_dtype"]
