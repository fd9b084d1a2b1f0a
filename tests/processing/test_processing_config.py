"""ProcessorConfig: validation, reading Hugging Face checkpoint files, writing a layout transformers reads."""
from __future__ import annotations

import importlib

import pytest

from molmo_edge.errors import ConfigError
from molmo_edge.processing import ProcessorConfig

from .processing_reference import write_json


def test_defaults_are_the_released_molmo2_settings():
    cfg = ProcessorConfig()
    assert (cfg.crop_size, cfg.patch_size, cfg.max_crops, cfg.overlap_margins) == (378, 14, 8, (4, 4))
    assert (cfg.image_pooling, cfg.video_pooling, cfg.fps, cfg.max_frames) == ((2, 2), (3, 3), 2.0, 128)
    assert cfg.patches_per_crop == 729 and cfg.patch_dim == 588
    assert cfg.single_crop_col_tokens is True
    assert ProcessorConfig(image_use_col_tokens=False).single_crop_col_tokens is False


@pytest.mark.parametrize("values,message", [
    (dict(crop_size=380), "multiple of patch_size"),
    (dict(crop_size=56), "no window"),
    (dict(overlap_margins=(-1, 2)), "negative"),
    (dict(fps=0), "fps"),
    (dict(max_frames=0), "max_frames"),
    (dict(frame_sample_mode="fps"), "frame_sample_mode"),
    (dict(image_std=(0.5, 0.0, 0.5)), "positive"),
    (dict(unknown_key=1), "unknown_key"),
])
def test_bad_settings_raise_config_error(values, message):
    with pytest.raises(ConfigError, match=message):
        ProcessorConfig(**values)


def test_reads_hub_style_checkpoint_files(tmp_path):
    """The files of a hub Molmo2 checkpoint (Ai2 layout config.json + separate processor files)."""
    write_json(tmp_path / "config.json", {
        "vit_config": {"image_default_input_size": [378, 378], "image_patch_size": 14},
        "use_frame_special_tokens": False, "text_config": {"vocab_size": 151936}})
    write_json(tmp_path / "preprocessor_config.json", {
        "image_processor_type": "Molmo2ImageProcessor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "max_crops": 24, "overlap_margins": [4, 4], "patch_size": 14, "pooling_size": [2, 2], "resample": 2,
        "size": {"height": 378, "width": 378}})
    write_json(tmp_path / "video_preprocessor_config.json", {
        "num_frames": 384, "max_fps": 2, "pooling_size": [3, 3], "frame_sample_mode": "uniform_last_frame",
        "size": {"height": 378, "width": 378}, "patch_size": 14})
    write_json(tmp_path / "processor_config.json", {
        "processor_class": "Molmo2Processor", "image_use_col_tokens": True, "use_single_crop_col_tokens": False,
        "use_single_crop_start_token": True, "video_use_col_tokens": False})
    cfg = ProcessorConfig.from_pretrained(tmp_path)
    assert cfg.max_crops == 24 and cfg.max_frames == 384 and cfg.fps == 2.0
    assert cfg.use_single_crop_col_tokens is False and cfg.use_frame_special_tokens is False
    assert cfg.crop_size == 378 and cfg.video_pooling == (3, 3)


def test_small_model_without_processor_files_gets_fitting_margins(tmp_path):
    write_json(tmp_path / "config.json", {"vision_config": {"image_size": [56, 56], "patch_size": 14}})
    cfg = ProcessorConfig.from_pretrained(tmp_path)
    assert (cfg.crop_size, cfg.patch_size, cfg.overlap_margins) == (56, 14, (1, 1))
    cfg = ProcessorConfig.from_pretrained(tmp_path, model_config={"vision_config": {"image_size": [28, 28]}})
    assert (cfg.crop_size, cfg.overlap_margins) == (28, (0, 0))


@pytest.mark.parametrize("files,message", [
    ({"config.json": {"vision_config": {"image_size": [56, 84]}}}, "square"),
    ({"preprocessor_config.json": {"resample": 3}}, "bilinear"),
    ({"preprocessor_config.json": {"size": {"height": 378, "width": 378}, "patch_size": 16}}, "multiple"),
])
def test_unusable_checkpoint_settings_raise_config_error(tmp_path, files, message):
    for name, data in files.items():
        write_json(tmp_path / name, data)
    with pytest.raises(ConfigError, match=message):
        ProcessorConfig.from_pretrained(tmp_path)


def test_unreadable_json_raises_config_error(tmp_path):
    (tmp_path / "processor_config.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(ConfigError, match="processor_config.json"):
        ProcessorConfig.from_pretrained(tmp_path)


def test_save_then_load_round_trips_and_transformers_reads_it(tmp_path):
    cfg = ProcessorConfig(crop_size=56, overlap_margins=(1, 2), max_crops=3, image_pooling=(2, 3), max_frames=16,
                          fps=4.0, use_single_crop_col_tokens=False, use_frame_special_tokens=False)
    cfg.save_pretrained(tmp_path)
    assert ProcessorConfig.from_pretrained(tmp_path) == cfg

    from transformers.image_processing_base import ImageProcessingMixin
    from transformers.video_processing_utils import VideoProcessorMixin

    image_dict, _ = ImageProcessingMixin.get_image_processor_dict(str(tmp_path))
    assert image_dict["image_processor_type"] == "Molmo2ImageProcessor"
    assert image_dict["size"] == {"height": 56, "width": 56} and image_dict["max_crops"] == 3
    assert image_dict["overlap_margins"] == [1, 2] and image_dict["pooling_size"] == [2, 3]
    video_dict, _ = VideoProcessorMixin.get_video_processor_dict(str(tmp_path))
    assert video_dict["num_frames"] == 16 and video_dict["max_fps"] == 4.0 and video_dict["pooling_size"] == [3, 3]
    processing = importlib.import_module("transformers.models.molmo2.processing_molmo2")
    processor_dict, _ = processing.Molmo2Processor.get_processor_dict(str(tmp_path))
    assert processor_dict["use_single_crop_col_tokens"] is False and processor_dict["use_frame_special_tokens"] is False
