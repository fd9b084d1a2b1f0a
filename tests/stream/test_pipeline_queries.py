"""Queries: kinds and prompts from user text; the live query set (stable indices, thread-safe)."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molmo_edge.errors import InputError
from molmo_edge.stream.queries import MAX_QUERY_CHARS, Query, QuerySet


@pytest.mark.parametrize("text, kind, prompt", [
    ("Track the red circle.", "track", "Track the red circle."),
    ("track all stars", "track", "track all stars"),
    ("How many blue squares are there?", "count", "How many blue squares are there?"),
    ("Count the stars", "count", "Count the stars"),
    ("Point to the cup", "point", "Point to the cup"),
    ("Where is the dog?", "point", "Where is the dog?"),
    ("count: stars", "count", "How many stars are there?"),
    ("TRACK:  red circle ", "track", "Track red circle."),
    ("point: cup", "point", "Point to cup\nPlease say 'There are none.' if it is not in the image."),
    ("red circle", "track", "Track red circle."),  # a bare label: the set's default kind
])
def test_query_kind_and_prompt(text, kind, prompt):
    query = Query.parse(text)
    assert (query.kind, query.prompt) == (kind, prompt)
    assert query.text == text.strip()


def test_a_bare_label_follows_the_default_kind():
    assert Query.parse("red circle", default_kind="point").kind == "point"
    assert Query.parse("stars", default_kind="count").prompt == "How many stars are there?"


@pytest.mark.parametrize("bad", ["", "   ", "count:", "x" * (MAX_QUERY_CHARS + 1), "Track\x00 the cup", 42, None])
def test_bad_queries_are_refused_with_a_message(bad):
    with pytest.raises(InputError):
        Query.parse(bad)


def test_indices_are_stable_and_reused_smallest_first():
    queries = QuerySet(["Track all stars.", "count: circles", "point: cup"])
    assert [a.index for a in queries.snapshot()] == [0, 1, 2]
    removed = queries.remove(1)
    assert removed.query.text == "count: circles"
    assert [(a.index, a.query.text) for a in queries.snapshot()] == [(0, "Track all stars."), (2, "point: cup")]
    added = queries.add("Track the red square.")
    assert added.index == 1  # the smallest free index
    replaced = queries.set("Track all circles.")
    assert [a.index for a in queries.snapshot()] == [0] and replaced.index == 0
    with pytest.raises(IndexError, match="live indices: \\[0\\]"):
        queries.remove(5)


def test_a_changed_query_gets_a_new_uid_even_at_the_same_index():
    queries = QuerySet(["Track all stars."])
    first = queries.snapshot()[0]
    queries.set("Track all stars.")  # same text, but a new query: its tracker starts afresh
    second = queries.snapshot()[0]
    assert first.index == second.index == 0 and second.uid > first.uid


def test_the_query_limit():
    queries = QuerySet(max_queries=2)
    queries.add("a")
    queries.add("b")
    with pytest.raises(InputError, match="at most|most allowed"):
        queries.add("c")
    with pytest.raises(InputError, match="at most"):
        queries.set_all(["a", "b", "c"])
    assert len(queries) == 2  # a refused change changes nothing


def test_set_all_validates_everything_before_changing_anything():
    queries = QuerySet(["Track all stars."])
    with pytest.raises(InputError):
        queries.set_all(["Track all circles.", ""])
    assert [a.query.text for a in queries.snapshot()] == ["Track all stars."]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("add"), st.sampled_from(["a", "b", "c"])),
                          st.tuples(st.just("remove"), st.integers(0, 5)),
                          st.tuples(st.just("set"), st.sampled_from(["x", "y"]))), max_size=30))
def test_query_set_invariants_under_any_sequence_of_changes(operations):
    queries = QuerySet(max_queries=4)
    model: dict[int, str] = {}  # the expected index -> text
    last_uid = 0  # every new query gets a uid never issued before
    for op, arg in operations:
        try:
            if op == "add":
                active = queries.add(arg)
                assert active.index == min(i for i in range(5) if i not in model)
                assert active.uid > last_uid
                last_uid = active.uid
                model[active.index] = arg
            elif op == "remove":
                queries.remove(arg)
                del model[arg]
            else:
                active = queries.set(arg)
                assert active.uid > last_uid
                last_uid = active.uid
                model = {0: arg}
        except (IndexError, InputError):
            assert (op == "remove" and arg not in model) or (op == "add" and len(model) == 4)
        snapshot = queries.snapshot()
        assert {a.index: a.query.text for a in snapshot} == model
        assert len(snapshot) <= 4
        uids = [a.uid for a in snapshot]
        assert len(set(uids)) == len(uids)


def test_changes_from_many_threads_never_corrupt_the_set():
    queries = QuerySet(["Track all stars."], max_queries=8)
    errors = []

    def churn(name: str) -> None:
        for _ in range(200):
            try:
                active = queries.add(f"point: {name}")
                queries.snapshot()
                queries.remove(active.index)
            except InputError:
                pass  # the set was full at that moment: a refusal, not a corruption
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=churn, args=(f"thing{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [(a.index, a.query.text) for a in queries.snapshot()] == [(0, "Track all stars.")]
