"""A prior that makes coordinate tokens learnable from little data.

Molmo2 writes every coordinate as an integer 0..1000, and our small tokenizer makes each of those
numbers ONE token ("Ġ123"; training/tokenizer_builder.py). That keeps answers short (fast decode
on a robot) but turns localisation into a 1001-way classification whose classes start out
unrelated: a prediction of 455 for a target of 456 is as wrong as 999, and each class is seen
rarely. A model trained from scratch on a few thousand scenes then learns the grammar long before
it learns where things are. Two standard remedies for coordinate classification (SimCC-style
soft labels; structured output embeddings) address that, and neither changes the model's architecture,
its checkpoint layout or its decoding:

1. Smooth rows: the input-embedding and lm_head rows of coordinate token `v` are initialised from
   a random projection of Fourier features of v (`cos/sin(2π f v / 1000)`, f on a geometric grid),
   so neighbouring values start with similar rows. The lm_head logit h·w_v is then a Fourier
   series in v: one hidden direction raises a smooth bump of values around any position.
2. Soft targets: the loss target of a coordinate token is a Gaussian over the neighbouring values
   (σ in coordinate units, the same tokenizer variant) instead of a one-hot, so a near miss is
   rewarded and every step trains the whole neighbourhood. Greedy decoding still takes the mode.

3. Smooth positions (`init_positions`): the ViT's learned position embedding starts as a random
   projection of 2-D Fourier features of each patch's (row, column), so where a patch sits is a
   smooth, linearly readable signal in every visual token from step 0. A from-scratch ViT with
   N(0, std) position rows must first discover that neighbouring patches are neighbours; with this
   start the decoder only has to learn a readout from "where" features to coordinate rows.
4. Expected-coordinate regression (`regression_weight`): the soft targets only reward a guess
   within ~3σ of the truth, so a model whose guesses are still hundreds of units off gets no signal
   for moving closer. An L1 loss on the mean of the predicted distribution over the label's
   coordinate tokens (a soft-argmax, as in DSNT-style heatmap regression) is smooth everywhere: it
   pulls probability mass toward the target's side from the first step, and fades into the
   soft-target CE once the guesses are close.
The first, second and fourth only touch the tokens whose text is a coordinate (%03d numbers and 1000, with or without the
leading space); every other token trains with the plain Molmo2 loss.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

COORD_MAX = 1000
_COORD_TEXT = re.compile(r"^(\s?)(\d{3}|1000)$")


class CoordinatePrior(BaseModel):
    """Recipe settings. The defaults switch everything off (plain Molmo2 training)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _regression_needs_soft_targets(self) -> "CoordinatePrior":
        if self.regression_weight > 0 and self.label_sigma <= 0:
            raise ValueError("regression_weight needs label_sigma > 0 (it is part of the soft-target loss)")
        return self

    label_sigma: float = Field(0.0, ge=0, description="std of the Gaussian soft target, in coordinate units "
                                                       "(0..1000); 0 = one-hot (plain cross-entropy)")
    label_radius_sigmas: float = Field(3.0, gt=0, description="soft targets are cut at this many sigmas")
    init_rows: bool = Field(False, description="initialise coordinate embedding / lm_head rows smoothly "
                                               "(from-scratch models only)")
    n_frequencies: int = Field(16, ge=1, description="Fourier frequencies of the smooth rows")
    max_cycles: float = Field(64.0, gt=0, description="highest frequency, in cycles per 0..1000 range")
    init_positions: bool = Field(False, description="initialise the ViT position embedding from 2-D Fourier "
                                                    "features of the patch grid (from-scratch models only)")
    regression_weight: float = Field(0.0, ge=0, description="weight of an L1 loss on the EXPECTED coordinate "
                                                             "(soft-argmax over the label's variant), in units "
                                                             "of the 0..1 range; needs label_sigma > 0")
    position_rms: float = Field(1.0, gt=0, description="RMS of those smooth position rows. About the RMS of the "
                                                       "patch embedding's output, so where a patch is weighs as "
                                                       "much as what it shows; at the init std (0.05) the "
                                                       "position signal is lost under the pixel content")


@dataclass(frozen=True)
class CoordinateVocab:
    """Which token ids are coordinates. ids: int64 [n_variants, 1001], -1 where a value has no token
    in that variant (variant 0 = bare "123", variant 1 = with leading space "Ġ123", ...)."""

    ids: torch.Tensor

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "CoordinateVocab":
        """Scan the base vocabulary (duck-typed: `base_vocab_size`, `decode`) for coordinate tokens."""
        variants: dict[str, torch.Tensor] = {}
        for token_id in range(tokenizer.base_vocab_size):
            text = tokenizer.decode([token_id], skip_special_tokens=True)
            match = _COORD_TEXT.match(text)
            if match is None:
                continue
            prefix, digits = match.groups()
            row = variants.setdefault(prefix, torch.full((COORD_MAX + 1,), -1, dtype=torch.long))
            row[int(digits)] = token_id
        if not variants:
            return cls(ids=torch.full((0, COORD_MAX + 1), -1, dtype=torch.long))
        return cls(ids=torch.stack([variants[k] for k in sorted(variants)]))

    @property
    def n_tokens(self) -> int:
        return int((self.ids >= 0).sum())


def fourier_rows(n_frequencies: int, max_cycles: float) -> torch.Tensor:
    """[1001, 2·n_frequencies]: cos/sin of each value at frequencies from 0.5 to max_cycles cycles
    per range (geometric), each column scaled to unit RMS over the values."""
    values = torch.arange(COORD_MAX + 1, dtype=torch.float64) / COORD_MAX             # [1001] in 0..1
    cycles = torch.logspace(math.log10(0.5), math.log10(max_cycles), n_frequencies, dtype=torch.float64)
    phase = 2 * math.pi * values[:, None] * cycles[None, :]                           # [1001, F]
    rows = torch.cat([phase.cos(), phase.sin()], dim=1)                                # [1001, 2F]
    return rows / rows.pow(2).mean(dim=0, keepdim=True).sqrt()


@torch.no_grad()
def init_coordinate_rows(model, vocab: CoordinateVocab, prior: CoordinatePrior, seed: int = 0) -> int:
    """Overwrite the coordinate rows of the input embedding and the lm_head with smooth rows.

    Each row = Fourier features [2F] @ a fixed random projection [2F, D], rescaled to the RMS of the
    matrix's other rows, so the smooth rows sit at the scale the rest of the init chose. A few random
    dimensions are mixed in per token (10 % of the norm) so identical values in different variants
    are not identical rows. Returns the number of tokens initialised.
    """
    if vocab.n_tokens == 0:
        return 0
    generator = torch.Generator().manual_seed(seed)
    features = fourier_rows(prior.n_frequencies, prior.max_cycles).float()             # [1001, 2F]
    for matrix in (model.decoder.embed_tokens.weight, model.lm_head.weight):
        dim = matrix.shape[1]
        projection = torch.randn(features.shape[1], dim, generator=generator) / math.sqrt(features.shape[1])
        smooth = features @ projection                                                 # [1001, D]
        target_rms = float(matrix.float().pow(2).mean().sqrt())
        smooth = smooth / smooth.pow(2).mean().sqrt() * target_rms
        for variant in vocab.ids:
            present = variant >= 0
            noise = torch.randn(int(present.sum()), dim, generator=generator) * target_rms
            rows = 0.995 * smooth[present] + 0.1 * noise
            matrix[variant[present]] = rows.to(matrix.dtype)
    return vocab.n_tokens


@torch.no_grad()
def init_vit_positions(model, seed: int = 0, n_frequencies: int = 8, rms: float | None = None) -> None:
    """Overwrite the ViT position embedding [rows·cols, Dv] with smooth 2-D rows.

    Features per patch: cos/sin of its row and of its column at `n_frequencies` geometric
    frequencies (0.5 .. rows/4 cycles per crop: half of Nyquist, so neighbours stay alike) -> [P, 4F], times a fixed random projection
    [4F, Dv], rescaled to `rms` (None: the RMS the random init gave the matrix).

    Why the scale matters: the visual tokens must carry where they are for the decoder to write
    coordinates. A from-scratch model's position rows at the init std (0.05) are ~10x smaller than
    the patch embedding of the pixels (~0.6 RMS at std 0.05 over 588 inputs), and a run started that
    way attended to the right place no better than chance after 1000 steps.
    """
    vision = model.vision
    table = vision.positional_embedding                                                # [P, Dv]
    n_rows, n_cols = model.config.vision.grid_size
    generator = torch.Generator().manual_seed(seed + 1)
    cycles = torch.logspace(math.log10(0.5), math.log10(max(1.0, max(n_rows, n_cols) / 4)), n_frequencies,
                            dtype=torch.float64)                                       # [F]
    rows = torch.arange(n_rows, dtype=torch.float64).repeat_interleave(n_cols) / n_rows  # [P] row of patch
    cols = torch.arange(n_cols, dtype=torch.float64).repeat(n_rows) / n_cols           # [P] column
    phase_r = 2 * math.pi * rows[:, None] * cycles[None]                               # [P, F]
    phase_c = 2 * math.pi * cols[:, None] * cycles[None]
    features = torch.cat([phase_r.cos(), phase_r.sin(), phase_c.cos(), phase_c.sin()], dim=1).float()
    projection = torch.randn(features.shape[1], table.shape[1], generator=generator) / math.sqrt(features.shape[1])
    smooth = features @ projection                                                     # [P, Dv]
    target_rms = float(table.float().pow(2).mean().sqrt()) if rms is None else rms
    table.copy_((smooth / smooth.pow(2).mean().sqrt() * target_rms).to(table.dtype))


class SoftCoordinateTargets:
    """Gaussian soft targets for coordinate labels, precomputed per token id.

    `window_ids[t]` [W] and `window_probs[t]` [W] hold, for coordinate token t with value v, the
    token ids of values v-r..v+r of the same variant and their normalised Gaussian weights (ids of
    values off the 0..1000 range are padded with t itself at probability 0).
    """

    def __init__(self, vocab: CoordinateVocab, vocab_size: int, sigma: float, radius_sigmas: float = 3.0,
                 regression_weight: float = 0.0):
        radius = max(1, int(math.ceil(sigma * radius_sigmas)))
        self.regression_weight = regression_weight
        self.variant_ids = vocab.ids.clamp(max=vocab_size - 1)                          # [n_variants, 1001]
        self.variant_present = (vocab.ids >= 0) & (vocab.ids < vocab_size)
        self.token_variant = torch.zeros(vocab_size, dtype=torch.long)
        self.token_value = torch.zeros(vocab_size)
        offsets = torch.arange(-radius, radius + 1)                                    # [W]
        self.is_coordinate = torch.zeros(vocab_size, dtype=torch.bool)
        self.window_ids = torch.zeros(vocab_size, offsets.numel(), dtype=torch.long)
        self.window_probs = torch.zeros(vocab_size, offsets.numel())
        gauss = torch.exp(-0.5 * (offsets.double() / sigma) ** 2)
        for variant_index, variant in enumerate(vocab.ids):
            for value in range(COORD_MAX + 1):
                token = int(variant[value])
                if token < 0 or token >= vocab_size:
                    continue
                self.token_variant[token] = variant_index
                self.token_value[token] = value / COORD_MAX
                neighbours = value + offsets
                valid = (neighbours >= 0) & (neighbours <= COORD_MAX)
                ids = torch.where(valid, variant[neighbours.clamp(0, COORD_MAX)], token)
                valid &= ids >= 0
                probs = torch.where(valid, gauss, torch.zeros_like(gauss))
                self.is_coordinate[token] = True
                self.window_ids[token] = torch.where(valid, ids, token)
                self.window_probs[token] = (probs / probs.sum()).float()

    def for_labels(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """labels [N] -> (rows [M] positions whose label is a coordinate, ids [M, W], probs [M, W])."""
        on_device = labels.device
        flags = self.is_coordinate.to(on_device)[labels]
        rows = flags.nonzero().flatten()
        picked = labels[rows].cpu()
        return rows, self.window_ids[picked].to(on_device), self.window_probs[picked].to(on_device)


    def expected_value_error(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits [M, V] at coordinate labels [M] -> |E[value] - value| [M], values in 0..1.

        E is taken under the softmax restricted to the label's own variant (the 1001 tokens of its
        spelling), so it measures where the model puts a coordinate, not whether it writes one.
        """
        device = logits.device
        variant = self.token_variant.to(device)[labels]                                 # [M]
        ids = self.variant_ids.to(device)[variant]                                      # [M, 1001]
        present = self.variant_present.to(device)[variant]
        scores = logits.gather(1, ids).masked_fill(~present, float("-inf"))            # [M, 1001]
        values = torch.linspace(0.0, 1.0, COORD_MAX + 1, device=device)
        expected = (scores.softmax(dim=-1) * values).sum(dim=-1)                        # [M]
        return (expected - self.token_value.to(device)[labels]).abs()


def build_soft_targets(prior: CoordinatePrior, tokenizer, vocab_size: int) -> SoftCoordinateTargets | None:
    """The recipe's soft targets, or None when label_sigma is 0 or the tokenizer has no coordinate tokens."""
    if prior.label_sigma <= 0:
        return None
    vocab = CoordinateVocab.from_tokenizer(tokenizer)
    if vocab.n_tokens == 0:
        return None
    return SoftCoordinateTargets(vocab, vocab_size, prior.label_sigma, prior.label_radius_sigmas,
                                 regression_weight=prior.regression_weight)
