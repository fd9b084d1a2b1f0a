"""Molmo2 assembled: vision tower -> connector -> text decoder -> lm_head.

The three stages (`model.vision`, `model.connector`, `model.decoder`) are separate modules with
static-friendly shapes; `forward` is the convenient all-in-one path with the reference's keyword
arguments, and everything data-dependent (visual token index, masks, position ids) is computed
here on the host side before the stages run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from molmo_edge.model.config import Molmo2Config
from molmo_edge.model.connector import Connector
from molmo_edge.model.decoder import KVCache, TextDecoder
from molmo_edge.model.inputs import ModelInputError, add_visual_tokens, visual_token_index
from molmo_edge.model.layers import RMSNorm
from molmo_edge.model.masks import build_attention_mask, build_prefill_mask, position_ids_from_padding
from molmo_edge.model.vision import VisionTower

if TYPE_CHECKING:  # pragma: no cover
    from molmo_edge.model.generation import GenerationConfig


@dataclass
class Molmo2Output:
    """logits [B, S_kept, vocab_size]; past_key_values: per layer (k, v) [B, Hkv, S_total, hd]."""

    logits: torch.Tensor
    past_key_values: KVCache | None = None


class Molmo2ForConditionalGeneration(nn.Module):
    def __init__(self, config: Molmo2Config) -> None:
        super().__init__()
        self.config = config
        self.vision = VisionTower(config)
        self.connector = Connector(config)
        self.decoder = TextDecoder(config.text)
        # Covers the base vocabulary only: image special tokens can never be generated.
        self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Random init for training from scratch: N(0, std) weights and embeddings, zero biases,
        unit norm scales (the reference's initializer_range scheme). Uses the global torch RNG."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
        self.vision.positional_embedding.normal_(0.0, std)

    # ----- loading / saving -----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None) -> "Molmo2ForConditionalGeneration":
        from molmo_edge.model.checkpoint import load_checkpoint

        return load_checkpoint(folder, dtype=dtype, device=device)

    def save_pretrained(self, folder: str | Path, tokenizer: Any = None) -> Path:
        from molmo_edge.model.checkpoint import save_checkpoint

        return save_checkpoint(self, folder, tokenizer=tokenizer)

    def gradient_checkpointing_enable(self, enabled: bool = True) -> None:
        """Trade compute for memory in training: ViT blocks and decoder layers are recomputed in backward."""
        self.vision.gradient_checkpointing = enabled
        self.decoder.gradient_checkpointing = enabled

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    # ----- host-side helpers around the traced stages ---------------------------------------
    def encode_images(self, pixel_values: torch.Tensor, pooling: torch.Tensor) -> torch.Tensor:
        """ViT + connector: pixels [N, P, patch²·3], pooling [T, K] -> visual tokens [T', D].

        Rows whose window is entirely padding are dropped, as in the reference (the processor
        never emits a prompt token for them), so T' = number of <im_patch> tokens.
        """
        if pixel_values.dim() == 4:  # [n_images, n_crops, P, F] -> [N, P, F]
            pixel_values = pixel_values.reshape(-1, *pixel_values.shape[-2:])
        pooling = pooling.to(device=self.device, dtype=torch.long)
        if pooling.dim() == 3:
            pooling = pooling.reshape(-1, pooling.shape[-1])
        features = self.vision(pixel_values.to(self.device))
        tokens = self.connector(features, pooling)
        keep = (pooling >= 0).any(-1)
        return tokens if bool(keep.all()) else tokens[keep]

    def embed_inputs(self, input_ids: torch.Tensor, visual_tokens: torch.Tensor | None = None,
                     visual_index: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings [B, S, D] with visual tokens [T, D] ADDED at the <im_patch> positions."""
        embeds = self.decoder.embed(input_ids)
        if visual_tokens is None:
            return embeds
        if visual_index is None:
            visual_index = visual_token_index(input_ids, self.config.image_patch_id, visual_tokens.shape[0])
        return add_visual_tokens(embeds, visual_tokens.to(embeds.device), visual_index)

    def build_prefill_mask(self, mm_token_type_ids: torch.Tensor,
                           padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, S] -> [B, 1, S, S] additive mask in the model dtype (causal + image block)."""
        return build_prefill_mask(mm_token_type_ids, padding_mask, dtype=self.dtype)

    # ----- the all-in-one forward -----------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_token_pooling: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_token_pooling: torch.Tensor | None = None,
        video_grids: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        visual_tokens: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> Molmo2Output:
        """Logits for `input_ids` [B, S].

        attention_mask: None, a 2-D padding mask [B, S_past+S] (1 = token, 0 = padding), or a ready
            4-D additive mask [B, 1, S, S_past+S] used as is (message trees in training).
        position_ids: [B, S]; default: positions that skip left padding (or S_past.. without one).
        visual_tokens: [T, D] precomputed ViT+connector output; skips pixel_values.
        logits_to_keep: 0 = all positions, n = the last n.
        """
        input_ids = input_ids.to(self.device)
        batch_size, seq_length = input_ids.shape
        past_length = past_key_values[0][0].shape[2] if past_key_values else 0
        if visual_tokens is None:
            visual_tokens = self._visual_tokens_from_pixels(pixel_values, image_token_pooling, image_grids,
                                                            pixel_values_videos, video_token_pooling, video_grids)
        embeds = self.embed_inputs(input_ids, visual_tokens)

        padding_mask = None
        if attention_mask is not None and attention_mask.dim() == 4:
            mask = attention_mask.to(self.device)
        else:
            if attention_mask is not None:
                padding_mask = self._full_padding_mask(attention_mask.to(self.device), past_length, seq_length)
            # The image block applies at prefill; decode steps are plain causal.
            is_prefill = past_length == 0 or visual_tokens is not None
            mm = mm_token_type_ids.to(self.device) if (mm_token_type_ids is not None and is_prefill) else None
            mask = build_attention_mask(batch_size, seq_length, past_length, padding_mask, mm,
                                        dtype=embeds.dtype, device=self.device)
        if position_ids is None:
            if padding_mask is not None:
                position_ids = position_ids_from_padding(padding_mask)[:, -seq_length:]
            else:
                position_ids = torch.arange(past_length, past_length + seq_length, device=self.device)
                position_ids = position_ids[None].expand(batch_size, seq_length)
        hidden, present = self.decoder(embeds, mask, position_ids.to(self.device), past_key_values)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return Molmo2Output(logits=self.lm_head(hidden), past_key_values=present)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, generation: "GenerationConfig | None" = None,
                 **kwargs: Any) -> torch.Tensor:
        """Prompt [B, S] -> prompt + new tokens [B, S + n]; see `molmo_edge.model.generation.generate`."""
        from molmo_edge.model.generation import generate

        return generate(self, input_ids, generation, **kwargs)

    # ----- internals ------------------------------------------------------------------------
    def _visual_tokens_from_pixels(self, pixel_values, image_token_pooling, image_grids, pixel_values_videos,
                                   video_token_pooling, video_grids) -> torch.Tensor | None:
        if pixel_values is not None and pixel_values_videos is not None:
            raise ModelInputError("pixel_values and pixel_values_videos were both given; one prompt holds images "
                                  "or one video, not both")
        if pixel_values is not None:
            if image_token_pooling is None:
                raise ModelInputError("pixel_values needs image_token_pooling (the processor returns both)")
            tokens = self.encode_images(pixel_values, image_token_pooling)
            if image_grids is not None:
                expected = int((image_grids[:, 0] * image_grids[:, 1] + image_grids[:, 2] * image_grids[:, 3]).sum())
                self._check_grid_count("image_grids", expected, tokens.shape[0])
            return tokens
        if pixel_values_videos is not None:
            if video_token_pooling is None:
                raise ModelInputError("pixel_values_videos needs video_token_pooling (the processor returns both)")
            tokens = self.encode_images(pixel_values_videos, video_token_pooling)
            if video_grids is not None:
                expected = int((video_grids[:, 0] * video_grids[:, 1] * video_grids[:, 2]).sum())
                self._check_grid_count("video_grids", expected, tokens.shape[0])
            return tokens
        return None

    @staticmethod
    def _check_grid_count(name: str, expected: int, got: int) -> None:
        if expected != got:
            raise ModelInputError(f"{name} describe {expected} visual tokens but the pooling index yields {got}; "
                                  "pass the grids and pooling index from the same processor call")

    @staticmethod
    def _full_padding_mask(mask_2d: torch.Tensor, past_length: int, seq_length: int) -> torch.Tensor:
        """Accept [B, S_past+S] (the usual form) or [B, S] for the new tokens only (past assumed real)."""
        if mask_2d.shape[1] == past_length + seq_length:
            return mask_2d
        if mask_2d.shape[1] == seq_length:
            ones = torch.ones(mask_2d.shape[0], past_length, dtype=mask_2d.dtype, device=mask_2d.device)
            return torch.cat((ones, mask_2d), dim=1)
        raise ModelInputError(f"attention_mask has {mask_2d.shape[1]} columns; expected {past_length + seq_length} "
                              f"(cached + new tokens) or {seq_length}")
