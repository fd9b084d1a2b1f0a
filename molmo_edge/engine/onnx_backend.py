"""The ONNX Runtime backend: a bundle's vit / connector / decoder graphs behind the Backend interface.

    backend = OnnxBackend.from_bundle("bundle/")                     # CPU, or the best GPU provider
    backend = OnnxBackend.from_bundle("bundle/", device="cuda:0", options=OnnxOptions(intra_op_threads=4))
    model = load_bundle_model("bundle/")                             # what molmo_edge.load_model returns

Execution providers: with `device=None` the best one installed is used, TensorRT EP > CUDA EP >
CPU; "cpu" forces the CPU, "cuda[:i]" a GPU (TensorRT EP when present, else CUDA EP), and
`OnnxOptions.providers` names them explicitly. Graph optimisation level and thread counts are
session options.

The KV cache never makes a round trip through numpy: the decoder's `present_*` outputs are bound
to OrtValues on the provider's device (IO binding) and those same OrtValues are bound as the next
step's `past_*` inputs. Only the logits ([V] floats) come back to the host each step, and the
ViT's features go to the connector the same way. Visual tokens are returned as host float32
tensors (`device` is the CPU): they are small, and the stream caches them per frame.

A bundle is opened with `molmo_edge.export.bundle.open_bundle`, which recomputes every file's
sha256 and refuses a tampered or incomplete bundle (`OnnxOptions.verify_hashes=False` checks sizes only).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.engine import graph_io as io
from molmo_edge.engine.backend import (Backend, BackendState, check_decode_input, check_encode_inputs,
                                       check_prefill_inputs, drop_padding_rows)
from molmo_edge.errors import BackendUnavailableError, BundleError, ConfigError, InputError, MolmoEdgeError

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime as ort

    from molmo_edge.export.bundle import Bundle

log = logging.getLogger(__name__)

TENSORRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
_OPT_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(f'ONNX Runtime is not installed ({exc}); pip install "molmo-edge[onnx]" '
                                      '(or "molmo-edge[gpu]" for CUDA)') from None
    return onnxruntime


class OnnxOptions(BaseModel):
    """How ONNX Runtime runs a bundle."""

    model_config = ConfigDict(extra="forbid")

    providers: list[str] | None = Field(None, description="execution providers in order of preference; "
                                                          "None = chosen from `device` and what is installed")
    graph_optimization_level: Literal["disabled", "basic", "extended", "all"] = "all"
    intra_op_threads: int = Field(0, ge=0, description="threads inside one operator; 0 = ONNX Runtime's default")
    inter_op_threads: int = Field(0, ge=0, description="threads across operators; 0 = ONNX Runtime's default")
    spin_wait: bool = Field(True, description="the decoder's idle threads busy-wait for the next token (ONNX "
                                              "Runtime's default, lowest latency); False frees the cores between "
                                              "calls for other work. The ViT and connector never spin: see "
                                              "`spins`")
    verify_hashes: bool = Field(True, description="recompute every file's sha256 when opening the bundle")
    tensorrt_cache_dir: Path | None = Field(None, description="TensorRT EP engine cache; None = "
                                                              "~/.cache/molmo-edge/ort-tensorrt/<bundle hash>")


def choose_providers(device: torch.device | str | None, available: list[str],
                     requested: list[str] | None = None) -> list[str]:
    """The execution providers to use, best first, always ending with the CPU (ORT's fallback).

    device None = the best installed (TensorRT > CUDA > CPU); "cpu" = CPU only; "cuda[:i]" = TensorRT
    or CUDA, BackendUnavailableError when neither is installed. `requested` overrides both and must
    be installed.
    """
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(f"ONNX Runtime providers {missing} are not installed here (available: "
                                          f"{available}); install onnxruntime-gpu for CUDA / TensorRT")
        return list(requested) + ([CPU_EP] if CPU_EP not in requested else [])
    kind = None if device is None else torch.device(device).type
    if kind == "cpu":
        return [CPU_EP]
    gpu = [p for p in (TENSORRT_EP, CUDA_EP) if p in available]
    if kind == "cuda" and not gpu:
        raise BackendUnavailableError(f"device {device!r} needs ONNX Runtime's CUDA or TensorRT provider, but this "
                                      f"onnxruntime has only {available}; pip install onnxruntime-gpu, or use "
                                      "device='cpu'")
    if kind not in (None, "cuda"):
        raise ConfigError(f"the ONNX Runtime backend runs on 'cpu' or 'cuda[:index]', not {device!r}")
    return gpu + [CPU_EP]


@dataclass
class OnnxState(BackendState):
    """The decode state: one OrtValue per past key/value ([1, Hkv, length, hd]) on the provider's device.

    OrtValues are never modified in place, so an OnnxState may be decoded from more than once.
    """

    past: list[Any] = field(default_factory=list)


class _Graph:
    """One InferenceSession and how to feed it through IO binding."""

    def __init__(self, session: "ort.InferenceSession", device_type: str, device_id: int) -> None:
        self.session = session
        self.device_type, self.device_id = device_type, device_id
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, Any], on_host: tuple[str, ...]) -> dict[str, Any]:
        """feeds: numpy arrays (copied to the device) or OrtValues (bound as they are).
        Outputs named in `on_host` come back in host memory; the others stay on the device."""
        return dict(zip(self.output_names, self.run_in_order(feeds, on_host)))

    def run_in_order(self, feeds: dict[str, Any], on_host: tuple[str, ...]) -> list[Any]:
        """`run`'s outputs as a list in the graph's output order (the decode step's hot path)."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name in self.input_names:
            value = feeds[name]
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.output_names:
            if name in on_host:
                binding.bind_output(name, "cpu")
            else:
                binding.bind_output(name, self.device_type, self.device_id)
        self.session.run_with_iobinding(binding)
        return binding.get_outputs()


class OnnxBackend(Backend):
    """Runs an exported bundle with ONNX Runtime (see the module docstring)."""

    name = "onnx"

    def __init__(self, bundle: "Bundle", device: torch.device | str | None = None,
                 options: OnnxOptions | None = None) -> None:
        from molmo_edge.model.config import Molmo2Config
        from molmo_edge.processing.processor import Processor

        ort = import_onnxruntime()
        self.options = options or OnnxOptions()
        self.bundle = bundle
        self.config = Molmo2Config.from_hf_dict(bundle.manifest.config)
        self.processor = Processor.from_pretrained(bundle.path)
        self.precision = bundle.manifest.precision
        self.device = torch.device("cpu")  # where visual tokens and logits are returned
        self.providers = choose_providers(device, ort.get_available_providers(), self.options.providers)
        on_gpu = self.providers[0] in (TENSORRT_EP, CUDA_EP)
        self.device_id = (torch.device(device).index or 0) if device is not None and on_gpu else 0
        device_type = "cuda" if on_gpu else "cpu"
        self.graphs = {name: _Graph(self._session(name), device_type, self.device_id) for name in io.GRAPH_NAMES}
        self._check_decoder_io()
        # Constant decode-step feeds: no visual token is added to a generated token.
        self._past_names = io.past_names(self.config.text.num_hidden_layers)
        self._no_visual = np.zeros((1, self.config.text.hidden_size), np.float32)
        self._no_visual_index = np.zeros((1, 1), np.int64)
        log.info("onnx backend: %s (%s) on %s", bundle.path, self.precision, ", ".join(self.providers))

    @classmethod
    def from_bundle(cls, folder: str | Path, device: torch.device | str | None = None,
                    options: OnnxOptions | None = None) -> "OnnxBackend":
        """Open and check a bundle folder, then start one session per graph."""
        from molmo_edge.export.bundle import open_bundle

        options = options or OnnxOptions()
        return cls(open_bundle(folder, verify=options.verify_hashes), device=device, options=options)

    # ----- the interface -------------------------------------------------------------------
    def encode_visual(self, pixel_values: torch.Tensor, pooling: torch.Tensor) -> torch.Tensor:
        check_encode_inputs(pixel_values, pooling, self.config)
        pixels = pixel_values.detach().to("cpu", torch.float32).numpy()
        pooling = pooling.detach().to("cpu", torch.int64)
        if pooling.shape[0] == 0:
            return torch.zeros(0, self.hidden_size)
        features = self._graph(io.VIT).run({"pixel_values": pixels}, on_host=())["features"]  # stays on device
        tokens = self._graph(io.CONNECTOR).run({"features": features, "pooling": pooling.numpy()},
                                               on_host=io.CONNECTOR_OUTPUTS)["visual_tokens"]
        # [T, D] -> [T', D]: rows whose window is all padding have no prompt token
        return drop_padding_rows(torch.from_numpy(np.array(tokens.numpy(), copy=True)), pooling)

    def prefill(self, input_ids: torch.Tensor, visual_tokens: torch.Tensor | None,
                mm_token_type_ids: torch.Tensor) -> tuple[torch.Tensor, OnnxState]:
        check_prefill_inputs(input_ids, visual_tokens, mm_token_type_ids, self.config, self.max_context_tokens)
        feeds = io.prefill_feeds(input_ids, visual_tokens, mm_token_type_ids, self.config)
        feeds.update(io.empty_past(self.config))
        return self._run_decoder(feeds, new_length=int(input_ids.shape[1]))

    def decode(self, token_id: int, state: BackendState) -> tuple[torch.Tensor, OnnxState]:
        self._check_state(state)
        check_decode_input(token_id, state, self.vocab_size, self.max_context_tokens)
        # The per-token hot path: the feeds `extend_feeds` would build for one token, made directly (the
        # mask of one new token over the cache is all zeros: everything before it is visible), so a step
        # costs little more than the graph itself.
        length = state.length
        feeds: dict[str, Any] = {
            "input_ids": np.array([[int(token_id)]], np.int64), "visual_tokens": self._no_visual,
            "visual_index": self._no_visual_index, "attention_mask": np.zeros((1, 1, 1, length + 1), np.float32),
            "position_ids": np.array([[length]], np.int64)}
        feeds.update(zip(self._past_names, state.past))
        return self._run_decoder(feeds, new_length=length + 1)

    def extend(self, token_ids: list[int], state: BackendState) -> tuple[torch.Tensor, OnnxState]:
        """Append several tokens in one decoder call (causal among themselves); logits of the last one."""
        self._check_state(state)
        if not token_ids:
            raise InputError("extend needs at least one token id")
        if state.length + len(token_ids) > self.max_context_tokens:
            raise InputError(f"{state.length} cached + {len(token_ids)} new tokens exceed this backend's "
                             f"{self.max_context_tokens}")
        feeds = io.extend_feeds(token_ids, state.length, self.config)
        feeds.update(zip(io.past_names(self.config.text.num_hidden_layers), state.past))
        return self._run_decoder(feeds, new_length=state.length + len(token_ids))

    def run_graph(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one graph ("vit", "connector", "decoder") on numpy inputs; every output comes back as numpy.
        For checks and benchmarks of a single stage (`molmo_edge.export.verify`)."""
        graph = self._graph(name)
        outputs = graph.run(feeds, on_host=tuple(graph.output_names))
        return {key: np.array(value.numpy(), copy=True) for key, value in outputs.items()}

    def close(self) -> None:
        """Release the sessions (and with them the weights and arena memory on the device)."""
        self.graphs = {}

    # ----- internals ------------------------------------------------------------------------
    def _session(self, name: str) -> "ort.InferenceSession":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                   _OPT_LEVELS[self.options.graph_optimization_level])
        if self.options.intra_op_threads:
            options.intra_op_num_threads = self.options.intra_op_threads
        if self.options.inter_op_threads:
            options.inter_op_num_threads = self.options.inter_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spins(name) else "0")
        path = self.bundle.graph_path(name)
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=self._provider_entries(name))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(f"ONNX Runtime cannot load {path} ({type(exc).__name__}: {exc}); re-export the bundle "
                              "with this molmo-edge, or upgrade onnxruntime") from None

    def spins(self, graph_name: str) -> bool:
        """Whether this graph's idle intra-op threads busy-wait for its next run.

        Each session has its own thread pool. Spinning pays off only for the decoder, which runs again
        within a millisecond for the next token; the ViT and connector run once per frame or window
        and then hand over to another graph, and if their threads kept spinning they would take the
        cores that graph needs (2 threads on 2 cores, 128-token window: connector 13.1 -> 5.7 ms,
        prefill 61.2 -> 22.8 ms, window 312 -> 256 ms; docs/benchmarks.md, window_lean_t2*.json).
        With one thread there is no pool to spin."""
        return self.options.spin_wait and graph_name == io.DECODER

    def _provider_entries(self, graph_name: str) -> list[Any]:
        entries: list[Any] = []
        for provider in self.providers:
            if provider == TENSORRT_EP:
                cache = self.options.tensorrt_cache_dir or (
                    Path.home() / ".cache" / "molmo-edge" / "ort-tensorrt" /
                    self.bundle.manifest.files[self.bundle.graph(graph_name).file].sha256[:16])
                cache.mkdir(parents=True, exist_ok=True)
                entries.append((provider, {
                    "device_id": self.device_id, "trt_fp16_enable": self.precision == "fp16",
                    "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                    "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}))
            elif provider == CUDA_EP:
                entries.append((provider, {"device_id": self.device_id}))
            else:
                entries.append(provider)
        return entries

    def _graph(self, name: str) -> _Graph:
        if not self.graphs:
            raise MolmoEdgeError("this ONNX backend was closed; load the bundle again")
        return self.graphs[name]

    def _check_decoder_io(self) -> None:
        n_layers = self.config.text.num_hidden_layers
        graph = self.graphs[io.DECODER]
        for kind, found, expected in (("inputs", graph.input_names, io.decoder_input_names(n_layers)),
                                      ("outputs", graph.output_names, io.decoder_output_names(n_layers))):
            if found != expected:
                raise BundleError(f"{self.bundle.path}: decoder {kind} {found} do not match the model config "
                                  f"({n_layers} layers: {expected[:7]}...); re-export the bundle")

    @staticmethod
    def _check_state(state: BackendState) -> None:
        if not isinstance(state, OnnxState):
            raise TypeError("decode needs the state returned by this backend's prefill or decode")

    def _run_decoder(self, feeds: dict[str, Any], new_length: int) -> tuple[torch.Tensor, OnnxState]:
        # outputs in the order `_check_decoder_io` checked at load: logits, then present k/v per layer
        logits, *past = self._graph(io.DECODER).run_in_order(feeds, on_host=("logits",))
        logits = torch.from_numpy(np.array(logits.numpy()[0], np.float32, copy=True))  # [V] host
        return logits, OnnxState(length=new_length, past=past)


# ----- molmo_edge.load_model(BUNDLE_DIR) ----------------------------------------------------------
@dataclass
class BundleOutput:
    """logits [1, 1, V]: the LAST position only (the graph computes no other); past_key_values: the
    backend's OnnxState, to pass back as `past_key_values` for the next tokens."""

    logits: torch.Tensor
    past_key_values: OnnxState | None = None


class BundleModel:
    """A bundle behind the torch model's calling convention (batch of one).

        model = molmo_edge.load_model("bundle/")
        out = model(**processor("Point to the red circle", images=image))   # out.logits [1, 1, V]
        ids = model.generate(**inputs, max_new_tokens=32)                     # [1, S + n]

    `logits_to_keep` is accepted for compatibility; only the last position's logits exist.
    """

    def __init__(self, backend: OnnxBackend) -> None:
        self.backend = backend
        self.config = backend.config
        self.processor = backend.processor

    def visual_tokens(self, pixel_values=None, image_token_pooling=None, pixel_values_videos=None,
                      video_token_pooling=None) -> torch.Tensor | None:
        if pixel_values is not None and pixel_values_videos is not None:
            raise InputError("pixel_values and pixel_values_videos were both given; one prompt holds images or "
                             "one video")
        pixels, pooling = ((pixel_values, image_token_pooling) if pixel_values is not None
                           else (pixel_values_videos, video_token_pooling))
        if pixels is None:
            return None
        if pooling is None:
            raise InputError("pixel values need their token pooling index (the processor returns both)")
        if pixels.dim() == 4:  # [n_images, n_crops, P, F] -> [N, P, F]
            pixels = pixels.reshape(-1, *pixels.shape[-2:])
        if pooling.dim() == 3:
            pooling = pooling.reshape(-1, pooling.shape[-1])
        return self.backend.encode_visual(pixels, pooling)

    def __call__(self, input_ids: torch.Tensor, pixel_values=None, image_token_pooling=None, image_grids=None,
                 pixel_values_videos=None, video_token_pooling=None, video_grids=None, mm_token_type_ids=None,
                 attention_mask=None, position_ids=None, past_key_values: OnnxState | None = None,
                 visual_tokens=None, logits_to_keep: int = 0) -> BundleOutput:
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise InputError(f"a bundle runs one sequence at a time: input_ids must be [1, S], got "
                             f"{list(input_ids.shape)}")
        if attention_mask is not None and (attention_mask.dim() != 2 or not bool((attention_mask != 0).all())):
            raise InputError("a bundle takes no padding: pass attention_mask=None (or all ones) with batch 1")
        if position_ids is not None:
            start = 0 if past_key_values is None else past_key_values.length
            expected = torch.arange(start, start + input_ids.shape[1])[None]
            if not torch.equal(position_ids.cpu().long(), expected):
                raise InputError("a bundle uses consecutive positions from the cache length; custom position_ids "
                                 "are not supported")
        if past_key_values is not None:
            logits, state = self.backend.extend(input_ids[0].tolist(), past_key_values)
            return BundleOutput(logits=logits[None, None], past_key_values=state)
        if visual_tokens is None:
            visual_tokens = self.visual_tokens(pixel_values, image_token_pooling, pixel_values_videos,
                                               video_token_pooling)
        if mm_token_type_ids is None:
            mm_token_type_ids = torch.zeros_like(input_ids)
        logits, state = self.backend.prefill(input_ids.cpu(), visual_tokens, mm_token_type_ids.cpu())
        return BundleOutput(logits=logits[None, None], past_key_values=state)

    def generate(self, input_ids: torch.Tensor, generation=None, **kwargs: Any) -> torch.Tensor:
        """Prompt [1, S] -> prompt + new tokens [1, S + n], like the torch model's generate; runs the
        runtime's shared generation loop (`molmo_edge.engine.generation`). kwargs: model inputs and
        GenerationConfig fields (max_new_tokens, do_sample, temperature, top_k, top_p, seed, eos_token_ids)."""
        from molmo_edge.engine.generation import GenerationOptions, generate
        from molmo_edge.model.generation import MODEL_INPUT_NAMES, GenerationConfig

        inputs = {name: kwargs.pop(name) for name in MODEL_INPUT_NAMES if name in kwargs}
        config = GenerationConfig.model_validate({**(generation or GenerationConfig()).model_dump(), **kwargs})
        options = GenerationOptions(max_new_tokens=config.max_new_tokens,
                                    temperature=config.temperature if config.do_sample else 0.0,
                                    top_k=config.top_k, top_p=config.top_p, seed=config.seed,
                                    eos_token_ids=config.eos_token_ids)
        visual = inputs.get("visual_tokens")
        if visual is None:
            visual = self.visual_tokens(inputs.get("pixel_values"), inputs.get("image_token_pooling"),
                                        inputs.get("pixel_values_videos"), inputs.get("video_token_pooling"))
        mm = inputs.get("mm_token_type_ids")
        mm = torch.zeros_like(input_ids) if mm is None else mm
        result = generate(self.backend, input_ids.cpu(), mm.cpu(), visual, options)
        new = torch.tensor([result.token_ids], dtype=input_ids.dtype)
        return torch.cat((input_ids.cpu(), new), dim=1)

    def close(self) -> None:
        self.backend.close()


def load_bundle_model(folder: str | Path, dtype: Any = None, device: torch.device | str | None = None) -> BundleModel:
    """`molmo_edge.load_model(BUNDLE_DIR)`: a BundleModel on ONNX Runtime. A bundle's precision is fixed at
    export, so `dtype` must be None."""
    if dtype is not None:
        raise ConfigError(f"{folder} is an exported bundle: its precision was fixed at export, so dtype={dtype!r} "
                          "does not apply (export again with --precision)")
    return BundleModel(OnnxBackend.from_bundle(folder, device=device))


__all__ = ["BundleModel", "BundleOutput", "OnnxBackend", "OnnxOptions", "OnnxState", "choose_providers",
           "import_onnxruntime", "load_bundle_model"]
