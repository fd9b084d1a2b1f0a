"""Pointing-attention supervision: an auxiliary loss that teaches the decoder WHERE to look.

Why it exists. To write the x of "the red circle" the decoder must (1) attend from the answer
position to the visual tokens that show the red circle, and (2) read their position out into a
coordinate token. Trained from scratch, each half only gets a gradient once the other works:
while attention is spread evenly, the attended value carries no position of the target, so the
read-out learns nothing, and while the read-out is random, moving attention changes nothing. Our
from-scratch runs sat on that saddle (coordinate loss at log 1001 after 1000-1800 steps, decoder
attention uniform over the image block, and the colour of an object becoming LESS linearly
decodable from its visual tokens as training went on: 82 % at init, 25 % at step 1000).

The ground truth already says where the answer's object is, so we supervise (1) directly: for
every answer token that is a coordinate (x or y of a point), chosen heads of one decoder layer are
trained to put their attention mass on the visual tokens whose pooling window contains that point
(in the right frame of a video). The loss is -log(sum of attention on those tokens), averaged over
the supervised queries and heads. It changes no weight layout and nothing at inference: the model
is the same Molmo2, it just learns to look first. This is a training aid in the spirit of
attention supervision in grounding models; it is off unless the recipe sets a weight.

Geometry it relies on (checked when the queries are built, skipped otherwise): every crop of an
example covers its whole frame — the global crop, a single high-res tile (`max_crops: 1`), and
each video frame (one crop per frame). Tiled high-res crops (`max_crops > 1`) are not supported:
those examples get no attention loss.

One process only: the loss scores the layer's attention after the forward pass, where FSDP2 has
already resharded that layer's weights, so the trainer refuses it under torchrun.
"""
from __future__ import annotations

import bisect
import contextlib
import re
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from molmo_edge.errors import ConfigError
from molmo_edge.training.message_tree import IGNORE_INDEX

# `<points coords="...">` / `<tracks coords="...">`: groups separated by ';', each "key id x y id x y ..."
# where key is the image index (an integer) or the frame time in seconds ("%.1f").
_ELEMENT = re.compile(r'<(?:points|tracks) coords="([^"]*)')
_WORD = re.compile(r"\S+")


class AttentionSupervision(BaseModel):
    """Recipe settings; weight 0 (the default) switches the loss off."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(0.0, ge=0, description="weight of the attention loss added to the LM loss (0 = off)")
    layer: int = Field(-1, description="decoder layer whose attention is supervised (negative: from the end)")
    heads: tuple[int, ...] = Field((0, 1), min_length=1, description="query heads of that layer that learn to point")
    margin_patches: float = Field(0.5, ge=0, description="a token is on target when the point lies in its "
                                                          "pooling window grown by this many patches")
    fps: float = Field(2.0, gt=0, description="frame rate of the training clips: frame = round(time x fps)")


@dataclass
class PointQueries:
    """The supervised queries of one batch. Q = queries (coordinate labels), S = sequence length."""

    rows: torch.Tensor       # int64 [Q] batch row of the query
    positions: torch.Tensor  # int64 [Q] position in the row whose label is the coordinate
    targets: torch.Tensor    # bool [Q, S] keys (visual tokens) on the point

    @property
    def n(self) -> int:
        return int(self.rows.numel())


class _Capture:
    """Forward hook storing the inputs (x, cos, sin) of one DecoderAttention call."""

    def __init__(self) -> None:
        self.inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, module, args, kwargs) -> None:
        x, cos, sin = args[:3]
        self.inputs = (x, cos, sin)


class PointingAttentionLoss:
    """Builds the supervised queries of a batch and scores a layer's attention on them."""

    def __init__(self, settings: AttentionSupervision, tokenizer, model_config) -> None:
        self.settings = settings
        vocab = model_config.text.embedding_rows
        # One decoded piece per token id, to find the coordinates in the label stream as text.
        base = min(tokenizer.base_vocab_size, vocab)
        self.pieces = [tokenizer.decode([i], skip_special_tokens=False) for i in range(base)]
        self.image_patch_id = model_config.image_patch_id
        self.patches_per_side = model_config.vision.grid_size[1]
        self.patches_per_crop = model_config.vision.num_patches
        n_layers = model_config.text.num_hidden_layers
        self.layer = settings.layer % n_layers
        n_heads = model_config.text.num_attention_heads
        bad = [h for h in settings.heads if not 0 <= h < n_heads]
        if bad:
            raise ConfigError(f"attention.heads {list(bad)}: the decoder has {n_heads} heads (0..{n_heads - 1})")

    # ----- targets ----------------------------------------------------------------------------------
    def _token_windows(self, pooling: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pooling [T, K] (patch indices, -1 = pad) -> (crop [T], box [T, 4] x0, y0, x1, y1 in 0..1)."""
        n = self.patches_per_side
        valid = pooling >= 0
        index = pooling.clamp(min=0)
        crop = (index // self.patches_per_crop).masked_fill(~valid, -1).max(dim=1).values   # [T]
        patch = index % self.patches_per_crop
        row, col = (patch // n).float(), (patch % n).float()                                  # [T, K]
        big = torch.full_like(row, 1e9)
        x0 = torch.where(valid, col, big).min(dim=1).values
        y0 = torch.where(valid, row, big).min(dim=1).values
        x1 = torch.where(valid, col + 1, -big).max(dim=1).values
        y1 = torch.where(valid, row + 1, -big).max(dim=1).values
        margin = self.settings.margin_patches
        box = torch.stack([x0 - margin, y0 - margin, x1 + margin, y1 + margin], dim=1) / n    # [T, 4]
        return crop, box

    def _label_points(self, label_ids: list[int]) -> list[tuple[int, float, float, str]]:
        """Labels of one branch -> (label index of the coordinate, x, y, key) for every x and y token."""
        starts, text = [], []
        offset = 0
        for token in label_ids:
            starts.append(offset)
            piece = self.pieces[token] if 0 <= token < len(self.pieces) else ""
            text.append(piece)
            offset += len(piece)
        joined = "".join(text)
        found = []
        for element in _ELEMENT.finditer(joined):
            base = element.start(1)
            content = element.group(1)
            group_start = 0
            for group in content.split(";"):
                words = [(m.group(), base + group_start + m.start()) for m in _WORD.finditer(group)]
                group_start += len(group) + 1
                if len(words) < 4 or (len(words) - 1) % 3:
                    continue  # an incomplete group (the answer was cut): nothing to supervise
                key = words[0][0]
                for i in range(1, len(words), 3):
                    (_, _), (xs, x_at), (ys, y_at) = words[i], words[i + 1], words[i + 2]
                    if not (xs.isdigit() and ys.isdigit()):
                        continue
                    x, y = int(xs) / 1000.0, int(ys) / 1000.0
                    for char_at in (x_at, y_at):
                        # the token whose text holds this character: the last one starting at or before it
                        found.append((bisect.bisect_right(starts, char_at) - 1, x, y, key))
        return found

    def queries(self, batch) -> PointQueries | None:
        """The coordinate labels of `batch` (a TrainingBatch on any device) and their target keys."""
        if batch.token_pooling is None:
            return None
        input_ids, labels = batch.input_ids.cpu(), batch.labels.cpu()
        example, branch = batch.example_index.cpu(), batch.branch_index.cpu()
        n_rows, seq = input_ids.shape
        visual_at = (input_ids == self.image_patch_id).reshape(-1).nonzero().flatten()       # [T] flat
        pooling = batch.token_pooling.cpu()
        if visual_at.numel() != pooling.shape[0]:
            return None  # visual tokens and pooling rows disagree: not a batch we understand
        crop, box = self._token_windows(pooling)
        token_row = visual_at // seq
        token_example = example.reshape(-1)[visual_at]
        rows, positions, targets = [], [], []
        flat_labels = labels.reshape(-1)
        flat_example, flat_branch = example.reshape(-1), branch.reshape(-1)
        loss_at = (flat_labels != IGNORE_INDEX).nonzero().flatten()
        keys = torch.stack([flat_example[loss_at], flat_branch[loss_at], loss_at // seq], dim=1)
        for ex, br, row in torch.unique(keys, dim=0).tolist():
            at = loss_at[(keys[:, 0] == ex) & (keys[:, 1] == br) & (keys[:, 2] == row)]     # [L] flat
            mine = (token_example == ex) & (token_row == row)
            if not bool(mine.any()):
                continue
            crops = torch.unique_consecutive(crop[mine])
            for label_index, x, y, key in self._label_points(flat_labels[at].tolist()):
                on_frame = mine.clone()
                if "." in key:   # a video frame time: one crop per frame, in time order
                    frame = int(round(float(key) * self.settings.fps))
                    if not 0 <= frame < crops.numel():
                        continue
                    on_frame &= crop == crops[frame]
                elif crops.numel() > 2:
                    continue  # a tiled high-res image (see the module doc) or several images
                hit = on_frame & (box[:, 0] <= x) & (x <= box[:, 2]) & (box[:, 1] <= y) & (y <= box[:, 3])
                if not bool(hit.any()):
                    continue
                target = torch.zeros(seq, dtype=torch.bool)
                target[visual_at[hit] - row * seq] = True
                rows.append(row)
                positions.append(int(at[label_index]) - row * seq)
                targets.append(target)
        if not rows:
            return None
        return PointQueries(torch.tensor(rows), torch.tensor(positions), torch.stack(targets))

    # ----- the loss ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def capture(self, model):
        """Record the supervised layer's attention inputs during a forward pass."""
        hook = _Capture()
        handle = model.decoder.layers[self.layer].self_attn.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield hook
        finally:
            handle.remove()

    def loss(self, model, hook: _Capture, queries: PointQueries, attention_mask: torch.Tensor) -> torch.Tensor:
        """-log(attention mass on the target keys), mean over queries and supervised heads. Scalar."""
        x, cos, sin = hook.inputs
        attention = model.decoder.layers[self.layer].self_attn
        device = x.device
        rows, positions = queries.rows.to(device), queries.positions.to(device)
        q, k = attention.queries_keys(x, cos, sin)                       # [B, H, S, hd], [B, Hkv, S, hd]
        heads = torch.tensor(self.settings.heads, device=device)
        n_rep = attention.num_heads // attention.num_kv_heads
        q_sel = q[rows, :, positions][:, heads]                          # [Q, h, hd]: the queries only
        k_sel = k[:, heads // n_rep]                                     # [B, h, S, hd]
        # Scores against every row's keys ([Q, B, h, S]; B is small), then each query's own row.
        scores = torch.einsum("qhd,bhsd->qbhs", q_sel * attention.head_dim ** -0.5, k_sel)
        scores = scores[torch.arange(rows.numel(), device=device), rows].float()   # [Q, h, S]
        allowed = attention_mask[rows, 0, positions].to(device)         # [Q, S] additive (0 or very negative)
        scores = scores + allowed.float().unsqueeze(1)
        on_target = scores.masked_fill(~queries.targets.to(device).unsqueeze(1), float("-inf"))
        log_mass = torch.logsumexp(on_target, dim=-1) - torch.logsumexp(scores, dim=-1)     # [Q, h]
        return -log_mass.mean()

