"""Preprocessing settings: image tiling, video frame sampling, and the token-layout flags.

`ProcessorConfig.from_pretrained(folder)` reads the Hugging Face files of a Molmo2 checkpoint when
they exist, with this precedence (later wins):

1. the defaults below (those of the released Molmo2 processors);
2. `config.json`: crop and patch size from `vision_config` (native) or `vit_config` (hub's Ai2
   layout: `image_default_input_size`, `image_patch_size`), and a top-level
   `use_frame_special_tokens` when present;
3. `preprocessor_config.json` (image processor) and `video_preprocessor_config.json`;
4. `processor_config.json`: the layout flags, and in the transformers-5 layout the nested
   `image_processor` / `video_processor` dicts.
When no file names the overlap margins and the default (4, 4) does not fit the crop (small test
models), the widest symmetric margins that leave a window are used.

`save_pretrained(folder)` writes one processor_config.json in the transformers-5 nested layout
(which `Molmo2Processor.from_pretrained` reads), so a saved folder loads in both libraries.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from molmo_edge.errors import ConfigError

PROCESSOR_CONFIG_FILE = "processor_config.json"
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"
_BILINEAR = 2  # PIL's resample code for bilinear, the only one Molmo2 uses

_LAYOUT_FLAGS = ("image_use_col_tokens", "use_single_crop_col_tokens", "use_single_crop_start_token",
                 "video_use_col_tokens", "use_frame_special_tokens")


class ProcessorConfig(BaseModel):
    """How images and video frames become crops, patches, pooling windows and prompt tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_size: int = Field(378, gt=0, description="side of a square crop in pixels (the ViT input)")
    patch_size: int = Field(14, gt=0, description="side of a ViT patch in pixels")
    max_crops: int = Field(8, ge=1, description="most high-res crops per image (8; 24 for some pointing training)")
    overlap_margins: tuple[int, int] = Field((4, 4), description="patches of overlap on each side of a crop")
    image_pooling: tuple[int, int] = Field((2, 2), description="(h, w) patches pooled into one image token")
    video_pooling: tuple[int, int] = Field((3, 3), description="(h, w) patches pooled into one frame token")
    image_use_col_tokens: bool = True
    use_single_crop_col_tokens: bool | None = Field(
        None, description="column tokens in the global (low-res) crop; None = follow image_use_col_tokens")
    use_single_crop_start_token: bool = True
    video_use_col_tokens: bool = False
    use_frame_special_tokens: bool = True
    fps: float = Field(2.0, gt=0, description="video sampling rate in frames per second")
    max_frames: int = Field(128, ge=1, description="most frames per video (128 SFT, 384 long context)")
    frame_sample_mode: Literal["uniform_last_frame", "uniform"] = "uniform_last_frame"
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @model_validator(mode="after")
    def _check_geometry(self) -> "ProcessorConfig":
        if self.crop_size % self.patch_size:
            raise ValueError(f"crop_size {self.crop_size} must be a multiple of patch_size {self.patch_size}")
        if min(self.overlap_margins) < 0:
            raise ValueError(f"overlap_margins {self.overlap_margins} must not be negative")
        if sum(self.overlap_margins) >= self.patches_per_side:
            raise ValueError(f"overlap_margins {self.overlap_margins} leave no window inside a crop of "
                             f"{self.patches_per_side} patches; use smaller margins")
        if min(self.image_pooling + self.video_pooling) < 1:
            raise ValueError("pooling sizes must be at least 1")
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std {self.image_std} must be positive")
        return self

    # -------------------------------------------------------------------------- derived sizes
    @property
    def patches_per_side(self) -> int:
        return self.crop_size // self.patch_size

    @property
    def window_px(self) -> int:
        """Stride between high-res crops in pixels: the crop minus both overlap margins (266 by default)."""
        return (self.patches_per_side - sum(self.overlap_margins)) * self.patch_size

    @property
    def patches_per_crop(self) -> int:
        """P: patches of one crop (729 for 378 / 14)."""
        return self.patches_per_side ** 2

    @property
    def patch_dim(self) -> int:
        """Floats in one flattened patch: patch_size² · 3 (588 for 14)."""
        return self.patch_size * self.patch_size * 3

    @property
    def single_crop_col_tokens(self) -> bool:
        return self.image_use_col_tokens if self.use_single_crop_col_tokens is None else self.use_single_crop_col_tokens

    def __init__(self, **values: Any):
        # Users see a ConfigError (one line in the CLI), not pydantic's ValidationError.
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg'].removeprefix('Value error, ')}"
                                 for e in exc.errors())
            raise ConfigError(f"invalid processor settings: {problems}") from None

    # ------------------------------------------------------------------------------ reading
    @classmethod
    def from_pretrained(cls, folder: str | Path, model_config: dict | None = None) -> "ProcessorConfig":
        """Read the settings of a checkpoint or bundle folder (see the module docstring)."""
        folder = Path(folder)
        values: dict[str, Any] = {}
        if model_config is None and (folder / "config.json").is_file():
            model_config = _read_json(folder / "config.json")
        if model_config:
            values.update(_from_model_config(model_config))
        if (folder / IMAGE_PROCESSOR_FILE).is_file():
            values.update(_from_image_processor(_read_json(folder / IMAGE_PROCESSOR_FILE)))
        if (folder / VIDEO_PROCESSOR_FILE).is_file():
            values.update(_from_video_processor(_read_json(folder / VIDEO_PROCESSOR_FILE)))
        if (folder / PROCESSOR_CONFIG_FILE).is_file():
            processor = _read_json(folder / PROCESSOR_CONFIG_FILE)
            if isinstance(processor.get("image_processor"), dict):
                values.update(_from_image_processor(processor["image_processor"]))
            if isinstance(processor.get("video_processor"), dict):
                values.update(_from_video_processor(processor["video_processor"]))
            values.update({k: processor[k] for k in _LAYOUT_FLAGS if k in processor})
        if "overlap_margins" not in values:
            # No processor file names the margins: keep the default (4, 4) where it fits, else the
            # widest symmetric margins that still leave a window (small test models: 4×4 patches -> 1).
            patches = values.get("crop_size", 378) // values.get("patch_size", 14)
            default = cls.model_fields["overlap_margins"].default
            if sum(default) >= patches:
                values["overlap_margins"] = (max(0, (patches - 1) // 2),) * 2
        return cls(**values)

    # ------------------------------------------------------------------------------ writing
    def to_hf_dict(self) -> dict[str, Any]:
        """The transformers-5 processor_config.json content (nested image/video processor dicts)."""
        size = {"height": self.crop_size, "width": self.crop_size}
        common = {
            "size": size, "patch_size": self.patch_size, "image_mean": list(self.image_mean),
            "image_std": list(self.image_std), "resample": _BILINEAR, "do_resize": True, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
        }
        return {
            "processor_class": "Molmo2Processor",
            **{flag: getattr(self, flag) for flag in _LAYOUT_FLAGS},
            "image_processor": {
                "image_processor_type": "Molmo2ImageProcessor", **common,
                "max_crops": self.max_crops, "overlap_margins": list(self.overlap_margins),
                "pooling_size": list(self.image_pooling),
            },
            "video_processor": {
                "video_processor_type": "Molmo2VideoProcessor", **common,
                "pooling_size": list(self.video_pooling), "num_frames": self.max_frames,
                "max_fps": self.fps, "do_sample_frames": True, "frame_sample_mode": self.frame_sample_mode,
            },
        }

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write `folder/processor_config.json`; returns its path."""
        path = Path(folder) / PROCESSOR_CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_hf_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path


# ---------------------------------------------------------------------------------- parsing
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; fix or delete the file") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def _square_size(size: Any, where: str) -> int:
    """HF writes sizes as {"height", "width"}, as [h, w], or as one int; Molmo2 needs square crops."""
    if isinstance(size, dict):
        height, width = size.get("height"), size.get("width")
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        height, width = size
    else:
        height = width = size
    if not isinstance(height, int) or height != width:
        raise ConfigError(f"{where}: crop size {size!r} must be one square size (height == width)")
    return height


def _from_model_config(config: dict) -> dict[str, Any]:
    values: dict[str, Any] = {}
    vision = config.get("vision_config") or config.get("vit_config") or {}
    size = vision.get("image_size", vision.get("image_default_input_size"))
    if size is not None:
        values["crop_size"] = _square_size(size, "config.json vision_config.image_size")
    patch = vision.get("patch_size", vision.get("image_patch_size"))
    if patch is not None:
        values["patch_size"] = patch
    if "use_frame_special_tokens" in config:
        values["use_frame_special_tokens"] = config["use_frame_special_tokens"]
    return values


def _common_processor_keys(data: dict, where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if data.get("resample", _BILINEAR) != _BILINEAR:
        raise ConfigError(f"{where}: resample={data['resample']} is not supported; Molmo2 resizes bilinearly (2)")
    if "size" in data:
        values["crop_size"] = _square_size(data["size"], where)
    if "patch_size" in data:
        values["patch_size"] = data["patch_size"]
    for key in ("image_mean", "image_std"):
        if key in data:
            value = data[key]
            values[key] = tuple(value) if isinstance(value, (list, tuple)) else (value,) * 3
    return values


def _from_image_processor(data: dict) -> dict[str, Any]:
    values = _common_processor_keys(data, "image processor config")
    for ours, theirs in (("max_crops", "max_crops"), ("overlap_margins", "overlap_margins"),
                         ("image_pooling", "pooling_size")):
        if theirs in data:
            values[ours] = data[theirs]
    return values


def _from_video_processor(data: dict) -> dict[str, Any]:
    values = _common_processor_keys(data, "video processor config")
    # HF names the frame budget `num_frames` and the sampling rate `max_fps`; the Ai2 code `max_frames`.
    for ours, theirs in (("video_pooling", "pooling_size"), ("max_frames", "max_frames"),
                         ("max_frames", "num_frames"), ("fps", "max_fps"), ("frame_sample_mode", "frame_sample_mode")):
        if data.get(theirs) is not None:
            values[ours] = data[theirs]
    return values
