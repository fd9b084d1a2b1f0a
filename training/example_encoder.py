"""Examples -> a tokenised message tree, with the same processor the runtime uses.

A training item is one visual input with several annotations: a list of objects with `media`
(training.tasks.Media: frames + optional timestamps), `prompt`, `answer` and `kind` (the synthetic
tasks.Example and the user-data UserExample both have this shape). Each annotation is laid out
exactly as inference will see it — the processor's chat prompt with the visual tokens, then the
answer tokens and EOS — and message_tree.build_message_tree merges the shared prefix.

The answer is tokenised on its own and appended after the prompt (rather than tokenising
prompt + answer as one string), because at inference the model generates answer tokens after the
prompt's last token: the training sequence must split at the same place.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from molmo_edge.training.message_tree import AnnotatedSequence, MessageTree, VisualInputs, build_message_tree
from molmo_edge.training.token_weights import TokenWeighting


class ExampleEncoder:
    """Callable: list of examples sharing one media -> MessageTree (runs in DataLoader workers)."""

    def __init__(self, processor: Any, weighting: TokenWeighting | None = None, max_tokens: int | None = None):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.weighting = weighting or TokenWeighting()
        self.max_tokens = max_tokens

    def _prompt_ids(self, prompt: str, media: Any, first: dict[str, torch.Tensor]) -> tuple[list[int], list[int]]:
        """Ids of another prompt about the same media, without preprocessing its pixels again."""
        if media.is_video:
            ids, mm = self.processor.video_prompt_from_frames(len(media.frames), list(media.timestamps_s), prompt)
        else:
            ids, mm = self.processor.image_prompt(first["image_grids"].tolist(), prompt)
        return ids[0].tolist(), mm[0].tolist()

    def __call__(self, examples: Sequence[Any]) -> MessageTree:
        if not examples:
            raise ValueError("a training item needs at least one annotation")
        media = examples[0].media
        eos = int(self.tokenizer.eos_id)
        # The first annotation's call preprocesses the pixels; the others only need their ids.
        if media.is_video:
            first = self.processor(examples[0].prompt, video=(list(media.frames), list(media.timestamps_s)))
        else:
            first = self.processor(examples[0].prompt, images=[media.image])
        visual = _visual_inputs(first)
        annotations: list[AnnotatedSequence] = []
        for k, example in enumerate(examples):
            if example.media is not media:
                raise ValueError("all annotations of one training item must share one media object")
            if k == 0:
                prompt_ids, prompt_mm = first["input_ids"][0].tolist(), first["mm_token_type_ids"][0].tolist()
            else:
                prompt_ids, prompt_mm = self._prompt_ids(example.prompt, media, first)
            answer_ids = self.tokenizer.encode(example.answer) + [eos]
            annotations.append(AnnotatedSequence(
                input_ids=prompt_ids + answer_ids,
                mm_token_type_ids=prompt_mm + [0] * len(answer_ids),
                loss_mask=[False] * len(prompt_ids) + [True] * len(answer_ids),
                task=str(example.kind),
            ))
        origin = str(getattr(examples[0], "origin", "") or "")
        return build_message_tree(annotations, visual, self.weighting, self.max_tokens, origin=origin)


def _visual_inputs(inputs: dict[str, torch.Tensor]) -> VisualInputs | None:
    """The processor's pixels + pooling index (image or video keys) as VisualInputs."""
    for pixels_key, pooling_key in (("pixel_values", "image_token_pooling"),
                                    ("pixel_values_videos", "video_token_pooling")):
        pixels = inputs.get(pixels_key)
        if pixels is not None:
            pixels = pixels.reshape(-1, *pixels.shape[-2:]).float()        # [n_crops, P, patch_dim]
            pooling = inputs[pooling_key].reshape(-1, inputs[pooling_key].shape[-1]).long()  # [T, K]
            return VisualInputs(pixel_values=pixels, token_pooling=pooling)
    return None
