"""Weight-only quantisation of the torch model with bitsandbytes: LLM.int8() or 4-bit NF4.

Every `nn.Linear` of the text decoder is swapped for `bnb.nn.Linear8bitLt` (int8 weights, one
float scale per output row, outliers above `int8_threshold` kept in fp16) or `bnb.nn.Linear4bit`
(NF4 codes in blocks of 64 with one absmax per block, matmul in `compute_dtype`).

What stays in floating point, and why:
* the ViT and the connector, by default: on MolmoPoint-8B most of the NF4 drift came from
  quantising the ViT, and keeping it (plus the connector) in bf16 kept PointBench at the bf16 level
  (reference/anchors.md). `quantize_vision=True` quantises them too, except the ViT's patch
  embedding and the connector's output projection, whose weight dtype the model reads as its
  compute dtype (vision.py / connector.py) and which are tiny anyway.
* `lm_head`: the logits decide every token; it is a single matrix, and bitsandbytes users skip it
  for the same reason. Embeddings are not Linear layers and are left alone.

Works on CPU (bitsandbytes >= 0.45 has CPU kernels) and CUDA. Quantisation happens when the new
parameter is moved from the CPU to its device, as bitsandbytes does it.

    report = quantize_model(model, "nf4")
    print(report.quantized_bytes, report.float_bytes)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from molmo_edge.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

QuantizationMode = Literal["int8", "nf4"]

# Modules the model reads a compute dtype from; never quantised (see the module docstring).
_DTYPE_SOURCE_MODULES = ("vision.patch_embedding", "connector.projector.down_proj")
_VISION_PREFIXES = ("vision.", "connector.")


class QuantizationConfig(BaseModel):
    """How to quantise a `Molmo2ForConditionalGeneration`."""

    model_config = ConfigDict(extra="forbid")

    mode: QuantizationMode
    quantize_vision: bool = Field(False, description="also quantise the ViT and connector (more drift)")
    compute_dtype: str | None = Field(None, description="NF4 matmul dtype; None = the model's dtype")
    int8_threshold: float = Field(6.0, ge=0.0, description="LLM.int8() outlier threshold (0 = no fp16 outliers)")
    nf4_blocksize: int = Field(64, description="weights per NF4 absmax block")
    skip_modules: list[str] = Field(default_factory=lambda: ["lm_head"],
                                    description="qualified names (or name prefixes) of Linear layers to keep")


@dataclass(frozen=True)
class QuantizationReport:
    """What `quantize_model` did. Bytes count weights plus their quantisation scales."""

    mode: QuantizationMode
    n_quantized: int          # Linear layers replaced
    n_kept: int               # Linear layers left in floating point
    float_bytes: int          # the replaced layers' weights before quantisation
    quantized_bytes: int      # the same layers after: int8 / packed NF4 codes + scales
    model_bytes: int          # every parameter and buffer of the model after quantisation

    @property
    def compression(self) -> float:
        """float_bytes / quantized_bytes of the replaced layers."""
        return self.float_bytes / max(self.quantized_bytes, 1)


def _import_bnb():
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise BackendUnavailableError(
            f"quantisation needs bitsandbytes ({exc}); install it with `pip install \"molmo-edge[quant]\"`"
        ) from None
    return bnb


class _FirstCastWarningOnly(logging.Filter):
    """LLM.int8() casts fp32/bf16 activations to fp16 by design, and bitsandbytes logs that on every
    matmul call; let the first one through and drop the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("MatMul8bitLt: inputs will be cast"):
            return True
        seen, self.seen = self.seen, True
        return not seen


def _log_int8_cast_once() -> None:
    bnb_log = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _FirstCastWarningOnly) for f in bnb_log.filters):
        bnb_log.addFilter(_FirstCastWarningOnly())


def _should_quantize(name: str, config: QuantizationConfig) -> bool:
    if name in _DTYPE_SOURCE_MODULES:
        return False
    if not config.quantize_vision and name.startswith(_VISION_PREFIXES):
        return False
    return not any(name == skip or name.startswith(skip + ".") for skip in config.skip_modules)


def _nf4_fits(linear: nn.Linear, config: QuantizationConfig, device: torch.device) -> bool:
    """bitsandbytes' packed CPU NF4 kernel reshapes the block scales to [out, in / blocksize], so on the
    CPU a layer whose input width is not a multiple of the block size stays in float (the SigLIP MLP's
    4304-wide fc2 is one; on CUDA any shape works)."""
    if config.mode != "nf4" or device.type != "cpu" or linear.in_features % config.nf4_blocksize == 0:
        return True
    log.debug("keeping a Linear(%d -> %d) in float: NF4 on the CPU needs in_features divisible by %d",
              linear.in_features, linear.out_features, config.nf4_blocksize)
    return False


def _quantized_linear(linear: nn.Linear, config: QuantizationConfig, device: torch.device,
                      compute_dtype: torch.dtype, bnb) -> nn.Module:
    """A bitsandbytes layer holding `linear`'s weights, quantised on `device`."""
    has_bias = linear.bias is not None
    weight = linear.weight.data.detach().to("cpu", torch.float32)  # bnb quantises on the CPU -> device move
    if config.mode == "int8":
        layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                    has_fp16_weights=False, threshold=config.int8_threshold)
        layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    else:
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                  compute_dtype=compute_dtype, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4",
                                         blocksize=config.nf4_blocksize)
    if has_bias:
        layer.bias = nn.Parameter(linear.bias.data.detach().to("cpu"), requires_grad=False)
    return layer.to(device)


def _quant_state_bytes(state) -> int:
    """Bytes of the tensors a bitsandbytes 4-bit QuantState keeps (absmax, code, nested absmax)."""
    if state is None:
        return 0
    total = 0
    for attr in ("absmax", "code", "offset"):
        value = getattr(state, attr, None)
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
    return total + _quant_state_bytes(getattr(state, "state2", None))


def int8_row_scales(layer: nn.Module) -> torch.Tensor | None:
    """The per-row absmax scales [out] of an int8 layer, or None. bitsandbytes keeps them on the weight
    until the first forward call, then moves them to `layer.state`."""
    for owner in (layer.weight, getattr(layer, "state", None)):
        scb = getattr(owner, "SCB", None)
        if isinstance(scb, torch.Tensor):
            return scb
    return None


def quantized_layer_bytes(layer: nn.Module) -> int:
    """Stored bytes of one (bitsandbytes or float) Linear layer's weight, with its scales; bias excluded."""
    weight = layer.weight
    total = weight.data.numel() * weight.data.element_size()
    scb = int8_row_scales(layer)
    if scb is not None:
        total += scb.numel() * scb.element_size()
    return total + _quant_state_bytes(getattr(weight, "quant_state", None))


def model_bytes(model: nn.Module) -> int:
    """Every parameter and buffer, quantised layers counted with their scales."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is not None and (int8_row_scales(module) is not None or hasattr(weight, "quant_state")):
            total += quantized_layer_bytes(module)
            seen.add(id(weight))
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def quantize_model(model: nn.Module, config: QuantizationConfig | QuantizationMode,
                   device: torch.device | str | None = None) -> QuantizationReport:
    """Replace the model's Linear layers IN PLACE (see the module docstring); returns what was done.

    device: where the quantised layers live; None = where the model's lm_head is.
    """
    if isinstance(config, str):
        if config not in ("int8", "nf4"):
            raise ConfigError(f"unknown quantization {config!r}; use 'int8' or 'nf4'")
        config = QuantizationConfig(mode=config)
    bnb = _import_bnb()
    _log_int8_cast_once()
    lm_head = getattr(model, "lm_head", None)
    reference = lm_head.weight if lm_head is not None else next(model.parameters())
    device = torch.device(device) if device is not None else reference.device
    compute_dtype = reference.dtype
    if config.compute_dtype is not None:
        from molmo_edge.model.checkpoint import resolve_dtype

        compute_dtype = resolve_dtype(config.compute_dtype)

    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and type(module) is nn.Linear]
    n_quantized = n_kept = float_bytes = quantized_bytes = 0
    for name, linear in targets:
        if not _should_quantize(name, config) or not _nf4_fits(linear, config, device):
            n_kept += 1
            continue
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        float_bytes += linear.weight.numel() * linear.weight.element_size()
        layer = _quantized_linear(linear, config, device, compute_dtype, bnb)
        quantized_bytes += quantized_layer_bytes(layer)
        setattr(parent, child_name, layer)
        n_quantized += 1
    if n_quantized == 0:
        log.warning("quantize_model(%s): no Linear layer matched; the model is unchanged", config.mode)
    model.eval()
    return QuantizationReport(mode=config.mode, n_quantized=n_quantized, n_kept=n_kept, float_bytes=float_bytes,
                              quantized_bytes=quantized_bytes, model_bytes=model_bytes(model))


__all__ = ["QuantizationConfig", "QuantizationMode", "QuantizationReport", "int8_row_scales", "model_bytes",
           "quantize_model", "quantized_layer_bytes"]
