"""The Backend interface: the only thing the stream, the CLI and the ROS node see of a model.

A backend runs Molmo2 in three steps, so that a video stream can encode each frame once and
prefill many windows from the cached visual tokens:

    tokens = backend.encode_visual(pixel_values, pooling)              # ViT + connector
    logits, state = backend.prefill(input_ids, tokens, mm_token_type_ids)
    while ...:
        logits, state = backend.decode(next_id, state)                   # one token, KV cache

`molmo_edge.engine.generation.generate` is the one loop that drives this; `Engine` adds prompts,
images and video on top. Implementations: `torch_backend.TorchBackend` (a checkpoint folder),
`onnx_backend.OnnxBackend` and `tensorrt_backend.TensorRTBackend` (a bundle folder).

The contract, in detail (every implementation must follow it; `tests/engine` checks the torch one):

* `encode_visual(pixel_values, pooling) -> torch.Tensor [T', D]`
    - `pixel_values`: float32 `[N, P, patch_size²·3]` (crops or frames, pixels in [-1, 1]), as the
      processor returns it: a CPU tensor, or any device (the backend moves it).
    - `pooling`: int64 `[T, K]`, indices into the flattened `[N·P]` patch list, -1 = padding.
    - returns one row per `<im_patch>` token of the prompt, in prompt order: rows of `pooling` whose
      window is entirely padding are DROPPED (the processor writes no prompt token for them), so
      T' = `real_token_rows(pooling).sum()`. `drop_padding_rows` does that for backends whose graph
      returns all T rows.
    - the result lives on `backend.device`, in the backend's activation dtype, and is meant to be
      passed back to `prefill` of the SAME backend (the stream caches it per frame). Call
      `.float().cpu()` to inspect it.
* `prefill(input_ids, visual_tokens, mm_token_type_ids) -> (logits, state)`
    - `input_ids`: int64 `[1, S]` (batch of one); `mm_token_type_ids`: int64 `[1, S]` (1 on every
      image/frame special token: the bidirectional image block of the prefill mask).
    - `visual_tokens`: `[T', D]` from `encode_visual` (several calls concatenated in prompt order are
      fine), or None / `[0, D]` for a text-only prompt. T' must equal the number of `<im_patch>`
      tokens in `input_ids` (`check_prefill_inputs` raises InputError otherwise).
    - returns the logits of the LAST prompt position as a float32 CPU tensor `[V]`, V =
      `config.text.vocab_size` (the base vocabulary: image special tokens have no lm_head row), and an
      opaque `BackendState` holding the KV cache.
    - positions are 0..S-1; every call starts a new sequence (no state is shared between calls).
* `decode(token_id, state) -> (logits, state)`
    - appends one token at position `state.length`, returns its logits (float32 CPU `[V]`) and the
      state for the next step. A backend may update the state IN PLACE and return the same object
      (static TensorRT KV buffers): never reuse a state after passing it to `decode`.
    - `max_context_tokens` bounds `state.length + 1`; beyond it a backend raises InputError.
* `close()` frees accelerator memory (weights, sessions, KV buffers); the backend is unusable after.
  Backends are context managers: `with load_backend(path) as backend: ...`.

Logits are returned on the CPU as float32 on purpose: the copy is small (V floats per step), it
makes sampling identical on every backend, and it synchronises the device, so the host-side
timings of the generation loop are honest.

Loading contract (what `molmo_edge.engine.loading` calls; implementations provide it):
* `TorchBackend.from_checkpoint(folder, device=None, dtype=None, quantization=None)`
* `OnnxBackend.from_bundle(folder, device=None)` and `TensorRTBackend.from_bundle(folder, device=None)`:
  the backend opens the bundle itself (`molmo_edge.export.bundle.open_bundle`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from molmo_edge.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from molmo_edge.model.config import Molmo2Config
    from molmo_edge.processing.processor import Processor


@dataclass
class BackendState:
    """Base of every backend's decode state. Subclasses add their KV cache (any form they like).

    `length` is the number of tokens the KV cache holds (prompt + tokens decoded so far); the next
    token written by `decode` gets position `length`.
    """

    length: int


class Backend(ABC):
    """One loaded Molmo2 model behind the encode / prefill / decode interface (see the module docstring).

    Subclasses set `name`, and in `__init__` `config`, `processor` and `device`.
    """

    #: short identifier: "torch", "onnx", "tensorrt" (shown in benchmarks and events)
    name: str = "backend"
    config: "Molmo2Config"
    processor: "Processor"
    device: torch.device

    # ----- the interface -------------------------------------------------------------------
    @abstractmethod
    def encode_visual(self, pixel_values: torch.Tensor, pooling: torch.Tensor) -> torch.Tensor:
        """ViT + connector: pixels [N, P, ps²·3] float32, pooling [T, K] int64 -> visual tokens [T', D]
        on `self.device` (all-padding pooling rows dropped)."""

    @abstractmethod
    def prefill(self, input_ids: torch.Tensor, visual_tokens: torch.Tensor | None,
                mm_token_type_ids: torch.Tensor) -> tuple[torch.Tensor, BackendState]:
        """Run the prompt: input_ids [1, S], visual_tokens [T', D] or None, mm_token_type_ids [1, S]
        -> (float32 CPU logits [V] of the last position, state)."""

    @abstractmethod
    def decode(self, token_id: int, state: BackendState) -> tuple[torch.Tensor, BackendState]:
        """Append one token: -> (float32 CPU logits [V] of that token, state for the next step)."""

    def close(self) -> None:
        """Free accelerator memory. The default does nothing (nothing held beyond Python objects)."""

    # ----- shared properties and helpers -----------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """V: length of the logits vector (the base vocabulary; image tokens are never generated)."""
        return self.config.text.vocab_size

    @property
    def max_context_tokens(self) -> int:
        """Most tokens (prompt + generated) one sequence may hold. Static-shape backends override it."""
        return self.config.text.max_position_embeddings

    @property
    def hidden_size(self) -> int:
        """D: width of one visual token (the text decoder's hidden size)."""
        return self.config.text.hidden_size

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={getattr(self, 'device', None)})"


# ----- helpers that every implementation shares ----------------------------------------------
def real_token_rows(pooling: torch.Tensor) -> torch.Tensor:
    """pooling [T, K] -> bool [T]: rows with at least one real patch (the rows the prompt has a token for)."""
    return (pooling >= 0).any(dim=-1)


def drop_padding_rows(tokens: torch.Tensor, pooling: torch.Tensor) -> torch.Tensor:
    """tokens [T, D] (one per pooling row, as a connector graph returns them) -> [T', D] real rows only."""
    keep = real_token_rows(pooling).to(tokens.device)
    return tokens if bool(keep.all()) else tokens[keep]


def check_encode_inputs(pixel_values: torch.Tensor, pooling: torch.Tensor, config: "Molmo2Config") -> None:
    """InputError unless pixels are [N, P, ps²·3] and pooling is integer [T, K] indexing inside N·P patches."""
    vision = config.vision
    expected = (vision.num_patches, vision.patch_dim)
    if pixel_values.dim() != 3 or tuple(pixel_values.shape[1:]) != expected:
        raise InputError(f"pixel_values must be [N, {expected[0]}, {expected[1]}] for this model, got "
                         f"{list(pixel_values.shape)}; build it with the model's own Processor")
    if pooling.dim() != 2 or pooling.dtype.is_floating_point:
        raise InputError(f"pooling must be an integer tensor [T, K], got {pooling.dtype} {list(pooling.shape)}")
    n_patches = pixel_values.shape[0] * pixel_values.shape[1]
    if pooling.numel() and int(pooling.max()) >= n_patches:
        raise InputError(f"pooling indexes patch {int(pooling.max())} but only {n_patches} patches were given; "
                         "pass the pixel values and the pooling index from the same processor call")


def check_prefill_inputs(input_ids: torch.Tensor, visual_tokens: torch.Tensor | None,
                         mm_token_type_ids: torch.Tensor, config: "Molmo2Config",
                         max_context_tokens: int | None = None) -> None:
    """InputError unless the prefill inputs fit together (see the module docstring); never touches the model."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] == 0:
        raise InputError(f"input_ids must be [1, S] with S >= 1 (one sequence), got {list(input_ids.shape)}")
    if tuple(mm_token_type_ids.shape) != tuple(input_ids.shape):
        raise InputError(f"mm_token_type_ids {list(mm_token_type_ids.shape)} must have the shape of input_ids "
                         f"{list(input_ids.shape)}")
    if max_context_tokens is not None and input_ids.shape[1] > max_context_tokens:
        raise InputError(f"the prompt has {input_ids.shape[1]} tokens but this backend holds at most "
                         f"{max_context_tokens}; use fewer frames or smaller images")
    n_patch_tokens = int((input_ids == config.image_patch_id).sum())
    n_visual = 0 if visual_tokens is None else int(visual_tokens.shape[0])
    if visual_tokens is not None and (visual_tokens.dim() != 2 or visual_tokens.shape[1] != config.text.hidden_size):
        raise InputError(f"visual_tokens must be [T, {config.text.hidden_size}], got {list(visual_tokens.shape)}")
    if n_patch_tokens != n_visual:
        raise InputError(f"the prompt has {n_patch_tokens} <im_patch> tokens but {n_visual} visual tokens were "
                         "given; encode the same images/frames the prompt was built for")


def check_decode_input(token_id: int, state: BackendState, vocab_size: int, max_context_tokens: int) -> None:
    """InputError for a token outside the base vocabulary or a sequence already at the context limit."""
    if not 0 <= int(token_id) < vocab_size:
        raise InputError(f"token id {token_id} is outside the base vocabulary [0, {vocab_size})")
    if state.length + 1 > max_context_tokens:
        raise InputError(f"the sequence already holds {state.length} tokens, the most this backend allows is "
                         f"{max_context_tokens}")


__all__ = [
    "Backend", "BackendState", "check_decode_input", "check_encode_inputs", "check_prefill_inputs",
    "drop_padding_rows", "real_token_rows",
]
