"""Message trees: every branch must see exactly what its annotation would see alone."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.training.message_tree import (
    IGNORE_INDEX, AnnotatedSequence, build_message_tree, linearize, tree_attention_mask)
from molmo_edge.training.token_weights import TokenWeighting

BOS, EOS, PATCH, START, END = 1, 2, 50, 51, 52


def make_annotation(n_visual: int, question: list[int], answer: list[int], task: str = "qa") -> AnnotatedSequence:
    """A stand-alone sequence: BOS, <start> patches <end>, question, answer, EOS."""
    visual = [START] + [PATCH] * n_visual + [END] if n_visual else []
    prompt = [BOS] + visual + question
    ids = prompt + answer + [EOS]
    mm = [0] + [1] * len(visual) + [0] * (len(question) + len(answer) + 1)
    loss = [False] * len(prompt) + [True] * (len(answer) + 1)
    return AnnotatedSequence(ids, mm, loss, task)


token_lists = st.lists(st.integers(3, 40), min_size=1, max_size=5)


@st.composite
def trees(draw):
    n_visual = draw(st.integers(0, 4))
    n = draw(st.integers(1, 4))
    shared = draw(st.lists(st.integers(3, 40), max_size=3))  # questions may share a beginning
    annotations = [make_annotation(n_visual, shared + draw(token_lists), draw(token_lists)) for _ in range(n)]
    return annotations


def visible_keys(mask_row: torch.Tensor) -> list[int]:
    return (mask_row == 0).nonzero().flatten().tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(trees(), min_size=1, max_size=3))
def test_every_branch_sees_exactly_its_standalone_sequence(packed):
    """Pack several trees into one row; check every mask entry against the stand-alone sequences."""
    built = [build_message_tree(a) for a in packed]
    parts = [linearize(t) for t in built]
    ids = torch.cat([p.input_ids for p in parts])
    pos = torch.cat([p.position_ids for p in parts])
    branch = torch.cat([p.branch_index for p in parts])
    mm = torch.cat([p.mm_token_type_ids for p in parts])
    example = torch.cat([torch.full_like(p.input_ids, e) for e, p in enumerate(parts)])
    labels = torch.cat([p.labels for p in parts])
    mask = tree_attention_mask(example, branch, mm)[0, 0]
    assert mask.shape == (ids.numel(), ids.numel())

    for q in range(ids.numel()):
        e, b, p = int(example[q]), int(branch[q]), int(pos[q])
        annotations = packed[e]
        # The stand-alone sequence this token belongs to (a prefix token belongs to all of them;
        # they agree on the prefix, so take the first).
        alone = annotations[b - 1] if b > 0 else annotations[0]
        keys = visible_keys(mask[q])
        # No key of another example, no key of another branch.
        assert all(int(example[k]) == e for k in keys)
        assert all(int(branch[k]) in (0, b) for k in keys)
        seen_positions = sorted(int(pos[k]) for k in keys)
        if mm[q]:
            # Visual tokens: causal view plus the whole visual block of the example.
            block = [i for i, t in enumerate(alone.mm_token_type_ids) if t]
            expected = sorted(set(range(p + 1)) | set(block))
        else:
            expected = list(range(p + 1))
        assert seen_positions == expected, (q, seen_positions, expected)
        # The keys hold the same tokens the stand-alone sequence has at those positions.
        assert all(int(ids[k]) == alone.input_ids[int(pos[k])] for k in keys)
        # The label is what the stand-alone sequence predicts there.
        want = alone.input_ids[p + 1] if p + 1 < len(alone.input_ids) and alone.loss_mask[p + 1] else IGNORE_INDEX
        if b == 0:
            want = IGNORE_INDEX
        assert int(labels[q]) == want
    # Every answer token of every annotation is predicted exactly once.
    total_answers = sum(sum(a.loss_mask) for anns in packed for a in anns)
    assert int((labels != IGNORE_INDEX).sum()) == total_answers


def test_padding_rows_are_never_fully_blocked_and_never_seen():
    example = torch.tensor([[0, 0, 0, -1, -1]])
    branch = torch.zeros_like(example)
    mm = torch.zeros_like(example)
    mask = tree_attention_mask(example, branch, mm)[0, 0]
    allowed = mask == 0
    assert allowed.any(dim=1).all()
    assert not allowed[:3, 3:].any()       # real tokens never see padding
    assert allowed[3, 3] and not allowed[3, 4] and not allowed[4, 3]
    assert mask.min() == torch.finfo(torch.float32).min  # finite, ONNX/TensorRT friendly
    assert torch.isfinite(tree_attention_mask(example, branch, mm, torch.bfloat16)).all()


def test_prefix_stops_before_the_answer_even_for_identical_questions():
    a = make_annotation(2, [10, 11], [20])
    b = make_annotation(2, [10, 11], [21, 22])
    tree = build_message_tree([a, b])
    # Shared prompt is BOS + 4 visual + 2 question tokens = 7; the prefix must end one earlier, so
    # each branch predicts its own first answer token from its own copy of the last prompt token.
    assert tree.prefix_ids.numel() == 6
    assert [b_ids.tolist() for b_ids in tree.branch_ids] == [[11, 20, EOS], [11, 21, 22, EOS]]
    assert [lab.tolist() for lab in tree.branch_labels] == [[20, EOS, IGNORE_INDEX], [21, 22, EOS, IGNORE_INDEX]]
    tokens = linearize(tree)
    assert tokens.position_ids.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 6, 7, 8, 9]


def test_visual_tokens_after_the_shared_prefix_are_refused():
    a = make_annotation(0, [10], [20])
    b = make_annotation(0, [11], [20])
    b.mm_token_type_ids[-2] = 1  # a "visual" token inside the answer of one branch
    with pytest.raises(ValueError, match="image/frame tokens"):
        build_message_tree([a, b])


def test_weights_follow_the_molmo2_formula_and_branches_are_dropped_to_fit():
    qa1 = make_annotation(1, [10], [20, 21, 22])            # 3 answer tokens + EOS = 4 loss tokens
    qa2 = make_annotation(1, [11], [20] * 8)                # 9 loss tokens
    pt = make_annotation(1, [12], [30, 31], task="point")   # flat 0.2
    tree = build_message_tree([qa1, qa2, pt])
    w = [bw[bw > 0].unique().tolist() for bw in tree.branch_weights]
    assert w[0] == pytest.approx([2 / math.sqrt(4) / math.sqrt(3)])
    assert w[1] == pytest.approx([2 / math.sqrt(9) / math.sqrt(3)])
    assert w[2] == pytest.approx([0.2])

    full = tree.n_tokens
    smaller = build_message_tree([qa1, qa2, pt], max_tokens=full - 1)
    assert smaller.n_branches == 2 and smaller.n_dropped_branches == 1 and smaller.n_tokens < full
    w0 = smaller.branch_weights[0][smaller.branch_weights[0] > 0].unique().tolist()
    assert w0 == pytest.approx([2 / math.sqrt(4) / math.sqrt(2)])  # two annotations remain
    with pytest.raises(ValueError, match="max_tokens"):
        build_message_tree([qa1], max_tokens=3)

    plain = build_message_tree([qa1, qa2], weighting=TokenWeighting(enabled=False))
    assert all(bool(((bw == 1) | (bw == 0)).all()) for bw in plain.branch_weights)
