"""Molmo2 preprocessing: image tiling, video frame sampling, token layout, prompts, tokenizer.

    from molmo_edge.processing import Processor, read_video
    processor = Processor.from_pretrained(folder)
    inputs = processor("Point to the red circle", images=image_rgb)          # ModelInputs
    frames, times_s = read_video("clip.mp4", processor.cfg)
    inputs = processor("Track the blue star.", video=(frames, times_s))
"""
from molmo_edge.processing.config import ProcessorConfig
from molmo_edge.processing.errors import InputError
from molmo_edge.processing.frame_sampling import frames_at_times, sample_frame_indices, sample_frame_times
from molmo_edge.processing.image import ImageBatch, ImageInputs, concat_images, image_grid, preprocess_image
from molmo_edge.processing.layout import TokenSequence, mm_token_type_ids
from molmo_edge.processing.processor import ModelInputs, Processor
from molmo_edge.processing.prompt import (count_prompt, point_prompt, prompt_for_query, track_prompt,
                                          user_turn)
from molmo_edge.processing.tokenizer import IMAGE_TOKEN_OFFSETS, ImageTokenIds, Tokenizer
from molmo_edge.processing.video import VideoInputs, concat_frames, preprocess_frame, preprocess_frames
from molmo_edge.processing.video_file import read_video

__all__ = [
    "ProcessorConfig", "InputError", "sample_frame_times", "sample_frame_indices", "frames_at_times",
    "ImageInputs", "ImageBatch", "preprocess_image", "concat_images", "image_grid", "TokenSequence",
    "mm_token_type_ids", "ModelInputs", "Processor", "point_prompt", "count_prompt", "track_prompt",
    "prompt_for_query", "user_turn", "Tokenizer", "ImageTokenIds", "IMAGE_TOKEN_OFFSETS", "VideoInputs",
    "preprocess_frames", "preprocess_frame", "concat_frames", "read_video",
]
