"""transformers' Molmo2 processing code made runnable without torchvision (for the processing tests).

torchvision is not installed here (and the PyPI wheel does not load against the CPU torch build),
so transformers' `Molmo2ImageProcessor` / `Molmo2VideoProcessor` cannot be instantiated. Their
methods and module-level helpers are plain Python, though. The stand-ins below borrow the
reference methods UNCHANGED (`_build_overlapping_crops`, `_image_batch_to_patches_and_grids`,
`_preprocess`, `_build_video_patches`, `TorchvisionBackend.rescale_and_normalize`) and supply only
the two torchvision calls those make:
* `resize`: torchvision 0.28's `resize_image` on a float tensor is
  `F.interpolate(mode="bilinear", align_corners=False, antialias=antialias)`, and returns the
  input unchanged when the size already matches (read from its source);
* `normalize`: torchvision's `normalize` is `image.sub_(mean).div_(std)` per channel.
Everything else (tiling choice, canvas, unfold, index grids, pooling, offsets, patch order,
rounding to uint8, the fused mean/std) is the reference's own code.
"""
from __future__ import annotations

import importlib
import json

import numpy as np
import torch
import torch.nn.functional as F

from molmo_edge.processing import ProcessorConfig

ref_image = importlib.import_module("transformers.models.molmo2.image_processing_molmo2")
ref_video = importlib.import_module("transformers.models.molmo2.video_processing_molmo2")
ref_processing = importlib.import_module("transformers.models.molmo2.processing_molmo2")


class _TorchvisionCalls:
    """The two torchvision operations the reference methods call on `self`."""

    def resize(self, image, size, resample=None, antialias=True, **kwargs):
        if tuple(image.shape[-2:]) == (size.height, size.width):
            return image
        return F.interpolate(image, size=[size.height, size.width], mode="bilinear", align_corners=False,
                             antialias=antialias)

    def normalize(self, image, mean, std, inplace=False, **kwargs):
        mean = torch.as_tensor(mean, dtype=image.dtype).view(-1, 1, 1)
        std = torch.as_tensor(std, dtype=image.dtype).view(-1, 1, 1)
        image = image.sub_(mean) if inplace else image.sub(mean)
        return image.div_(std)


def reference_kwargs(cfg: ProcessorConfig) -> dict:
    from transformers.image_utils import PILImageResampling

    return dict(resample=PILImageResampling.BILINEAR, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                image_mean=tuple(cfg.image_mean), image_std=tuple(cfg.image_std))


def chw_tensors(images) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous() for img in images]


def _make_reference_classes():
    from transformers.image_processing_backends import TorchvisionBackend
    from transformers.image_processing_base import BatchFeature, ImageProcessingMixin
    from transformers.image_utils import SizeDict
    from transformers.video_processing_utils import VideoProcessorMixin
    from transformers.video_utils import VideoMetadata

    class ReferenceImageProcessor(_TorchvisionCalls, ImageProcessingMixin):
        """Molmo2ImageProcessor's own methods on a torch-only backend."""

        _build_overlapping_crops = ref_image.Molmo2ImageProcessor._build_overlapping_crops
        _image_batch_to_patches_and_grids = ref_image.Molmo2ImageProcessor._image_batch_to_patches_and_grids
        _preprocess = ref_image.Molmo2ImageProcessor._preprocess
        rescale_and_normalize = TorchvisionBackend.rescale_and_normalize
        _fuse_mean_std_and_rescale_factor = TorchvisionBackend._fuse_mean_std_and_rescale_factor

        def __init__(self, cfg: ProcessorConfig):
            self.cfg = cfg

        def fetch_images(self, images):
            return images

        def __call__(self, images, **kwargs):
            images = images if isinstance(images, list) else [images]
            cfg = self.cfg
            return self._preprocess(
                chw_tensors(images), do_resize=True, size=SizeDict(height=cfg.crop_size, width=cfg.crop_size),
                do_convert_rgb=True, max_crops=cfg.max_crops, overlap_margins=list(cfg.overlap_margins),
                patch_size=cfg.patch_size, pooling_size=list(cfg.image_pooling), disable_grouping=None,
                return_tensors="pt", **reference_kwargs(cfg))

    class ReferenceVideoProcessor(_TorchvisionCalls, VideoProcessorMixin):
        """Molmo2VideoProcessor's own methods; frames arrive already sampled, with their timestamps.

        The reference stamps frame i with frames_indices[i] / fps, so fps = 1 and frames_indices =
        the timestamps in seconds hand it our sampled times unchanged."""

        _build_video_patches = ref_video.Molmo2VideoProcessor._build_video_patches
        _preprocess = ref_video.Molmo2VideoProcessor._preprocess
        rescale_and_normalize = TorchvisionBackend.rescale_and_normalize
        _fuse_mean_std_and_rescale_factor = TorchvisionBackend._fuse_mean_std_and_rescale_factor
        max_fps = 2

        def __init__(self, cfg: ProcessorConfig, timestamps_s):
            self.cfg, self.timestamps_s = cfg, list(timestamps_s)

        def __call__(self, videos, **kwargs):
            videos = videos if isinstance(videos, list) else [videos]
            cfg = self.cfg
            out = self._preprocess(
                [torch.stack(chw_tensors(list(video))) for video in videos],
                size=SizeDict(height=cfg.crop_size, width=cfg.crop_size), patch_size=cfg.patch_size,
                pooling_size=list(cfg.video_pooling), return_tensors="pt", **reference_kwargs(cfg))
            out = BatchFeature(dict(out))
            out["video_metadata"] = [VideoMetadata(total_num_frames=len(v), fps=1.0, frames_indices=self.timestamps_s)
                                     for v in videos]
            return out

    return ReferenceImageProcessor, ReferenceVideoProcessor


ReferenceImageProcessor, ReferenceVideoProcessor = _make_reference_classes()


def reference_molmo2_processor(tokenizer_json_path, cfg: ProcessorConfig, timestamps_s=()):
    """transformers' real `Molmo2Processor` over our tokenizer.json and the reference stand-ins."""
    from transformers import PreTrainedTokenizerFast

    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json_path), eos_token="<|im_end|>",
                                           pad_token="<|endoftext|>")
    class ReferenceMolmo2Processor(ref_processing.Molmo2Processor):
        # The stand-in sub-processors are not registered in transformers' (torchvision-only) auto
        # mappings, so the class check of the constructor is the one thing skipped.
        def check_argument_for_proper_class(self, argument_name, argument):
            return type(argument)

    return ReferenceMolmo2Processor(
        image_processor=ReferenceImageProcessor(cfg), video_processor=ReferenceVideoProcessor(cfg, timestamps_s),
        tokenizer=hf_tokenizer, image_use_col_tokens=cfg.image_use_col_tokens,
        use_single_crop_col_tokens=cfg.use_single_crop_col_tokens,
        use_single_crop_start_token=cfg.use_single_crop_start_token, video_use_col_tokens=cfg.video_use_col_tokens,
        use_frame_special_tokens=cfg.use_frame_special_tokens)


def write_json(path, data) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")
