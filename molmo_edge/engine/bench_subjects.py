"""What `molmo_edge.engine.benchmark` measures: one Subject per backend, and transformers.

A subject times four things on the window it was prepared with (`prepare` runs untimed first):
the ViT alone, the connector alone, the prefill from ready visual tokens, and the whole window
(ViT + connector + prefill + M greedy tokens). `BackendSubject` reaches the stages of the three
molmo-edge backends through their own modules or graphs; `TransformersSubject` uses the modules
of transformers' `Molmo2ForConditionalGeneration` and its `generate`.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from molmo_edge.engine import graph_io as io
from molmo_edge.engine.backend import Backend
from molmo_edge.engine.generation import GenerationOptions, generate
from molmo_edge.errors import BackendUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    from molmo_edge.engine.benchmark import BenchSettings, WindowInputs
    from molmo_edge.model.config import Molmo2Config


@dataclass
class WindowRun:
    """What one end-to-end window produced."""

    token_ids: list[int]
    decode_steps: int
    decode_tok_s: float


class Subject(ABC):
    """One thing measured: a backend, or transformers. `prepare` runs untimed before the stage calls."""

    name: str
    kind: str  # "torch", "onnx", "tensorrt", "transformers"
    device: torch.device
    precision: str
    config: "Molmo2Config"

    @abstractmethod
    def prepare(self, inputs: WindowInputs, settings: BenchSettings) -> None: ...

    @abstractmethod
    def run_vit(self) -> None: ...

    @abstractmethod
    def run_connector(self) -> None: ...

    @abstractmethod
    def run_prefill(self) -> None: ...

    @abstractmethod
    def run_window(self) -> WindowRun: ...

    def close(self) -> None:
        """Release the model (subjects that were handed a model leave it to the caller)."""

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def weight_bytes_per_param(self) -> float:
        return {"fp32": 4.0, "float32": 4.0, "fp16": 2.0, "float16": 2.0, "bfloat16": 2.0, "bf16": 2.0,
                "int8": 1.0, "nf4": 0.5}.get(self.precision, 4.0)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class BackendSubject(Subject):
    """A molmo-edge Backend: stages through its own modules / graphs, the window through `generate`."""

    def __init__(self, backend: Backend, name: str | None = None, owned: bool = False) -> None:
        self.backend = backend
        self.kind = backend.name
        self.name = name or backend.name
        self.config = backend.config
        self.device = getattr(backend, "device", torch.device("cpu"))
        self.owned = owned
        self.extra: dict[str, Any] = {}  # what the caller wants in the record (load time, ...)
        self.precision = self._precision()
        self._stages = self._stage_functions()
        self._inputs: WindowInputs | None = None

    def _precision(self) -> str:
        backend = self.backend
        report = getattr(backend, "quantization_report", None)
        if report is not None:
            return str(report.mode)  # "int8" / "nf4" (bitsandbytes)
        manifest = getattr(getattr(backend, "bundle", None), "manifest", None)
        if manifest is not None:
            return str(manifest.precision)  # a bundle's precision, fixed at export
        model = getattr(backend, "model", None)
        return _dtype_name(next(model.parameters()).dtype) if model is not None else "fp32"

    def _stage_functions(self) -> tuple[Callable, Callable] | None:
        """(vit(pixels, pooling) -> features, connector(features, pooling) -> tokens) for the known backends;
        None means only ViT + connector together can be timed (reported under vit, connector = None)."""
        backend = self.backend
        model = getattr(backend, "model", None)
        if model is not None and hasattr(model, "vision") and hasattr(model, "connector"):
            def vit(pixels, pooling):
                return model.vision(pixels)

            def connector(features, pooling):
                return model.connector(features, pooling)
            return vit, connector
        graphs = getattr(backend, "graphs", None)
        if isinstance(graphs, dict) and io.VIT in graphs:  # ONNX Runtime: features stay on the provider's device
            def vit(pixels, pooling):
                return graphs[io.VIT].run({"pixel_values": pixels.numpy()}, on_host=())["features"]

            def connector(features, pooling):
                return graphs[io.CONNECTOR].run({"features": features, "pooling": pooling.numpy()},
                                                on_host=io.CONNECTOR_OUTPUTS)["visual_tokens"]
            return vit, connector
        run = getattr(backend, "_run", None)  # TensorRT: engines by graph name
        if callable(run):
            def vit(pixels, pooling):
                return run(io.VIT, pixel_values=pixels)["features"]

            def connector(features, pooling):
                return run(io.CONNECTOR, features=features, pooling=pooling)["visual_tokens"]
            return vit, connector
        return None

    def prepare(self, inputs: WindowInputs, settings: BenchSettings) -> None:
        self._inputs = inputs
        # ONNX Runtime takes host arrays (its IO binding copies them); the others take tensors on their device
        on = torch.device("cpu") if self.kind == "onnx" else self.device
        self._pixels = inputs.pixel_values.to(on, torch.float32)
        self._pooling = inputs.pooling.to(on, torch.int64)
        self._ids = inputs.model_inputs["input_ids"]
        self._mm = inputs.model_inputs["mm_token_type_ids"]
        with torch.inference_mode():
            self._features = self._stages[0](self._pixels, self._pooling) if self._stages else None
            self._tokens = self.backend.encode_visual(inputs.pixel_values, inputs.pooling)
        self._options = GenerationOptions(max_new_tokens=settings.new_tokens,
                                          eos_token_ids=None if settings.stop_at_eos else [])

    def run_vit(self) -> None:
        with torch.inference_mode():
            if self._stages is None:
                self.backend.encode_visual(self._inputs.pixel_values, self._inputs.pooling)
            else:
                self._stages[0](self._pixels, self._pooling)
        self.synchronize()

    def run_connector(self) -> None:
        if self._stages is None:
            return
        with torch.inference_mode():
            self._stages[1](self._features, self._pooling)
        self.synchronize()

    def run_prefill(self) -> None:
        self.backend.prefill(self._ids, self._tokens, self._mm)  # logits come back on the CPU: synchronised

    def run_window(self) -> WindowRun:
        tokens = self.backend.encode_visual(self._inputs.pixel_values, self._inputs.pooling)
        result = generate(self.backend, self._ids, self._mm, tokens, self._options)
        return WindowRun(result.token_ids, max(0, len(result.token_ids) - 1), result.tokens_per_s)

    @property
    def has_connector_stage(self) -> bool:
        return self._stages is not None

    def close(self) -> None:
        if self.owned:
            self.backend.close()


class _StepClock:
    """A transformers StoppingCriteria that only records when each new token is ready (never stops)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def import_transformers_molmo2():
    """transformers' Molmo2ForConditionalGeneration, or BackendUnavailableError (it is a test/bench dependency)."""
    try:
        from transformers import Molmo2ForConditionalGeneration
    except ImportError as exc:
        raise BackendUnavailableError(
            f"--compare-transformers needs transformers with Molmo2 ({exc}); pip install 'transformers==5.23.0' "
            '(or "molmo-edge[test]")') from None
    return Molmo2ForConditionalGeneration


class TransformersSubject(Subject):
    """transformers' Molmo2ForConditionalGeneration: stages through its modules, the window through `.generate`."""

    kind = "transformers"

    def __init__(self, model: Any, config: "Molmo2Config", name: str = "transformers") -> None:
        self.model = model.eval()
        self.name = name
        self.config = config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.precision = _dtype_name(self.dtype)
        self.extra: dict[str, Any] = {}

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> "TransformersSubject":
        """Load a checkpoint folder the way transformers users do (`from_pretrained`): it loads what we save."""
        from molmo_edge.model.config import Molmo2Config

        model_cls = import_transformers_molmo2()
        model = model_cls.from_pretrained(str(folder), dtype=dtype).to(device)
        return cls(model, Molmo2Config.from_pretrained(folder))

    def prepare(self, inputs: WindowInputs, settings: BenchSettings) -> None:
        from transformers import GenerationConfig, StoppingCriteriaList

        self._inputs = inputs.model_inputs.to(self.device, dtype=self.dtype)
        inner = self.model.model
        taps = self.model.config.adapter_config.vision_feature_layer
        self._taps = [t + 1 if t >= 0 else t for t in taps]  # hidden_states[0] is the patch embedding
        with torch.inference_mode():
            self._features = self._vit()
            self._encoded = inner.get_video_features(self._inputs["pixel_values_videos"],
                                                     self._inputs["video_token_pooling"], self._inputs["video_grids"])
        # An empty list, not None: None would fall back to the checkpoint's generation_config.json EOS
        eos = self.config.stop_token_ids if settings.stop_at_eos else []
        self._generation = GenerationConfig(max_new_tokens=settings.new_tokens, do_sample=False, eos_token_id=eos,
                                            pad_token_id=self.config.pad_token_id)
        self._clock_type = StoppingCriteriaList

    def _vit(self) -> torch.Tensor:
        out = self.model.model.vision_tower(self._inputs["pixel_values_videos"], output_hidden_states=True)
        return torch.cat([out.hidden_states[t] for t in self._taps], dim=-1)

    def run_vit(self) -> None:
        with torch.inference_mode():
            self._vit()
        self.synchronize()

    def run_connector(self) -> None:
        with torch.inference_mode():
            self.model.model.multi_modal_projector(self._features, self._inputs["video_token_pooling"])
        self.synchronize()

    def run_prefill(self) -> None:
        with torch.inference_mode():
            self.model(input_ids=self._inputs["input_ids"], mm_token_type_ids=self._inputs["mm_token_type_ids"],
                       mm_encoder_outputs={"video": self._encoded}, use_cache=True, logits_to_keep=1)
        self.synchronize()

    def run_window(self) -> WindowRun:
        clock = _StepClock()
        with torch.inference_mode():
            out = self.model.generate(**self._inputs, generation_config=self._generation,
                                      stopping_criteria=self._clock_type([clock]))
        new = out[0, self._inputs["input_ids"].shape[1]:].tolist()
        steps = len(clock.times) - 1  # the first time is the prefill's token
        span_s = clock.times[-1] - clock.times[0] if steps > 0 else 0.0
        return WindowRun(new, max(0, steps), steps / span_s if span_s > 0 else 0.0)


__all__ = ["BackendSubject", "Subject", "TransformersSubject", "WindowRun", "import_transformers_molmo2"]
