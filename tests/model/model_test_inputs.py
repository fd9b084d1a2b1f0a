"""Hand-built multimodal model inputs for the model tests (the processing package is separate).

Pooling indices are built like the reference processor: a grid of patch indices into the
flattened [n_crops·P] patch list, padded with -1 to a multiple of the pooling window (floor(pad/2)
before, ceil(pad/2) after), then cut into row-major windows. Token layouts follow the Molmo2
processor: `<low_res_im_start>` + low-res rows + `<im_end>` + `<im_start>` + high-res rows with
`<im_col>` + `<im_end>`; video frames as timestamp text + `<frame_start>` + patches + `<frame_end>`.

Also the transformers parity cases (config dicts); `randomize_` is `tests.weights.randomize_unit_scale_`.
"""
from __future__ import annotations

import torch

from molmo_edge.model.config import Molmo2Config

# The model tests import the randomizer from here. Its defaults are this module's original variant:
# LayerNorm biases near 0, weights larger than the reference's 0.02 init so logits are peaked.
from tests.weights import randomize_unit_scale_ as randomize_  # noqa: F401


def pooling_windows(index_grid: torch.Tensor, pool_h: int, pool_w: int) -> tuple[torch.Tensor, int, int]:
    """[h, w] patch indices -> ([rows·cols, pool_h·pool_w] windows padded with -1, rows, cols)."""
    h, w = index_grid.shape
    pad_h, pad_w = (-h) % pool_h, (-w) % pool_w
    padded = torch.full((h + pad_h, w + pad_w), -1, dtype=torch.long)
    padded[pad_h // 2: pad_h // 2 + h, pad_w // 2: pad_w // 2 + w] = index_grid
    rows, cols = padded.shape[0] // pool_h, padded.shape[1] // pool_w
    windows = padded.reshape(rows, pool_h, cols, pool_w).permute(0, 2, 1, 3).reshape(rows * cols, pool_h * pool_w)
    return windows, rows, cols


class PromptBuilder:
    """Accumulates input_ids and mm_token_type_ids for one sample."""

    def __init__(self, config: Molmo2Config, generator: torch.Generator) -> None:
        self.config = config
        self.generator = generator
        self.ids: list[int] = []
        self.mm: list[int] = []

    def text(self, n_tokens: int) -> None:
        ids = torch.randint(0, self.config.text.vocab_size, (n_tokens,), generator=self.generator).tolist()
        self.ids += ids
        self.mm += [0] * n_tokens

    def special(self, token_id: int) -> None:
        self.ids.append(token_id)
        self.mm.append(1)

    def patch_rows(self, rows: int, cols: int, col_tokens: bool) -> None:
        for _ in range(rows):
            for _ in range(cols):
                self.special(self.config.image_patch_id)
            if col_tokens:
                self.special(self.config.image_col_id)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([self.ids]), torch.tensor([self.mm])


def _image_crops(config: Molmo2Config, highres_crops: tuple[int, int], first_patch: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
    """One image: a global crop + highres_crops[0]×highres_crops[1] crops.

    Returns (pixels [n_crops, P, F], pooling [T, 4], grid (lowres_rows, lowres_cols, highres_rows, highres_cols)).
    The high-res patch grid drops its last patch row and column, standing in for the overlap the
    real tiling removes, so its 2×2 windows include -1 padded slots.
    """
    v = config.vision
    rows, cols = v.grid_size
    n_crops = 1 + highres_crops[0] * highres_crops[1]
    pixels = torch.rand(n_crops, v.num_patches, v.patch_dim, generator=generator) * 2 - 1
    lowres = torch.arange(v.num_patches).reshape(rows, cols) + first_patch
    low_windows, low_rows, low_cols = pooling_windows(lowres, 2, 2)
    crop_grids = [
        [torch.arange(v.num_patches).reshape(rows, cols) + first_patch + (1 + r * highres_crops[1] + c) * v.num_patches
         for c in range(highres_crops[1])]
        for r in range(highres_crops[0])
    ]
    highres = torch.cat([torch.cat(row, dim=1) for row in crop_grids], dim=0)[:-1, :-1]
    high_windows, high_rows, high_cols = pooling_windows(highres, 2, 2)
    pooling = torch.cat((low_windows, high_windows), dim=0)
    return pixels, pooling, (low_rows, low_cols, high_rows, high_cols)


def _add_image_tokens(prompt: PromptBuilder, grid: tuple[int, int, int, int]) -> None:
    c = prompt.config
    low_rows, low_cols, high_rows, high_cols = grid
    prompt.special(c.low_res_image_start_token_id)
    prompt.patch_rows(low_rows, low_cols, col_tokens=False)
    prompt.special(c.image_end_token_id)
    prompt.special(c.image_start_token_id)
    prompt.patch_rows(high_rows, high_cols, col_tokens=True)
    prompt.special(c.image_end_token_id)


def image_inputs(config: Molmo2Config, seed: int = 0, highres_crops: list[tuple[int, int]] = ((2, 2),),
                 question_tokens: int = 7) -> dict[str, torch.Tensor]:
    """Model kwargs for a prompt with one image per entry of `highres_crops`."""
    g = torch.Generator().manual_seed(seed)
    prompt = PromptBuilder(config, g)
    prompt.text(1)  # BOS stand-in
    all_pixels, all_pooling, grids = [], [], []
    first_patch = 0
    for i, crops in enumerate(highres_crops):
        if len(highres_crops) > 1:
            prompt.text(2)  # "Image i"
        pixels, pooling, grid = _image_crops(config, crops, first_patch, g)
        first_patch += pixels.shape[0] * config.vision.num_patches
        all_pixels.append(pixels)
        all_pooling.append(pooling)
        grids.append(grid)
        _add_image_tokens(prompt, grid)
    prompt.text(question_tokens)
    input_ids, mm = prompt.tensors()
    return {
        "input_ids": input_ids,
        "pixel_values": torch.cat(all_pixels),
        "image_token_pooling": torch.cat(all_pooling),
        "image_grids": torch.tensor(grids),
        "mm_token_type_ids": mm,
    }


def video_inputs(config: Molmo2Config, seed: int = 0, n_frames: int = 3,
                 question_tokens: int = 6) -> dict[str, torch.Tensor]:
    """Model kwargs for a video of `n_frames` single-crop frames with 3×3 pooling."""
    g = torch.Generator().manual_seed(seed)
    v = config.vision
    prompt = PromptBuilder(config, g)
    prompt.text(1)
    pixels = torch.rand(n_frames, v.num_patches, v.patch_dim, generator=g) * 2 - 1
    poolings = []
    rows = cols = 0
    for frame in range(n_frames):
        grid = torch.arange(v.num_patches).reshape(v.grid_size) + frame * v.num_patches
        windows, rows, cols = pooling_windows(grid, 3, 3)
        poolings.append(windows)
        prompt.text(2 if frame == 0 else 3)  # "0.0 " / " 0.5 " timestamp text
        prompt.special(config.frame_start_token_id)
        prompt.patch_rows(rows, cols, col_tokens=False)
        prompt.special(config.frame_end_token_id)
    prompt.text(question_tokens)
    input_ids, mm = prompt.tensors()
    return {
        "input_ids": input_ids,
        "pixel_values_videos": pixels,
        "video_token_pooling": torch.cat(poolings),
        "video_grids": torch.tensor([[n_frames, rows, cols]]),
        "mm_token_type_ids": mm,
    }


def text_inputs(config: Molmo2Config, seed: int = 0, length: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, config.text.vocab_size, (1, length), generator=g)}


# ----- the transformers parity cases ------------------------------------------------------
def hf_config_dict(case: str) -> dict:
    """config.json dicts (native transformers layout) of the parity cases."""
    if case == "qwen3":
        return Molmo2Config.preset("tiny-test").to_hf_dict()
    if case == "qwen3-negative-taps":
        # 4 ViT blocks, taps [-2, 0]: block 3 exists in the reference but never reaches the output.
        d = Molmo2Config.preset("tiny-test").to_hf_dict()
        d["vision_config"]["num_hidden_layers"] = 4
        d["adapter_config"]["vision_feature_layer"] = [-2, 0]
        return d
    if case == "olmo-yarn":
        return Molmo2Config.preset("tiny-test-olmo").to_hf_dict()
    raise KeyError(case)


PARITY_CASES = ("qwen3", "qwen3-negative-taps", "olmo-yarn")
