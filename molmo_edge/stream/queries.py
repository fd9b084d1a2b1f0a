"""What a stream is asked: pointing, counting and tracking queries, several at once, changeable live.

    queries = QuerySet(["Track the red circle.", "count: stars"])
    queries.add("Point to all squares")          # -> 2 (its query_index)
    queries.set("Track all circles.")             # replace every query with this one (index 0)
    for active in queries.snapshot(): ...        # what the next window will be asked

A `Query` is the user's text, its kind and the prompt the model sees:
- `"Track the red circle."`, `"How many stars are there?"`, `"Point to the cup"`: a full instruction
  is sent as it is; its kind comes from its first words (track / how many, count / anything else
  is pointing).
- `"track: red circle"`, `"count: stars"`, `"point: cup"`: an explicit kind and a bare label, turned
  into the Molmo2 task prompt (`Track red circle.`, `How many stars are there?`, `Point to cup ...`).
- `"red circle"`: a bare label gets the set's `default_kind` ("track" for streams).

Indices. Every live query has a `query_index` that does not change while it lives: events carry
it and the ZeroMQ topic is `events/<query_index>/`, so a subscriber to one query keeps receiving
that query whatever else is added or removed. `add` takes the smallest free index, `remove` frees
one, `set` replaces everything with one query at index 0. Each change also gives the query a new
`uid`; the pipeline starts a fresh tracker when the uid at an index changes (new objects, new ids).

Thread-safety: every method may be called from any thread (the control socket's, a ROS callback)
while the pipeline runs; the pipeline takes a `snapshot()` at the start of each window, so a
change takes effect at the next window and never in the middle of one.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from molmo_edge.errors import InputError
from molmo_edge.processing.prompt import is_full_sentence, prompt_for_query

QueryKind = Literal["point", "count", "track"]
QUERY_KINDS: tuple[QueryKind, ...] = ("point", "count", "track")

MAX_QUERY_CHARS = 2000  # the same limit as the control socket's requests
DEFAULT_MAX_QUERIES = 16  # each query costs one prefill + decode per window

_KIND_PREFIX = re.compile(r"^\s*(point|count|track)\s*:\s*(.*)$", re.IGNORECASE | re.DOTALL)
_TRACK_START = re.compile(r"^\s*track\b", re.IGNORECASE)
_COUNT_START = re.compile(r"^\s*(how\s+many|count)\b", re.IGNORECASE)
# Control characters other than tab and newline: binary garbage, never a question.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Query(BaseModel):
    """One question for the model; build it with `Query.parse`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    text: str  # as the user gave it (the `query` field of events)
    kind: QueryKind
    prompt: str  # what the model is asked

    @classmethod
    def parse(cls, text: str, default_kind: QueryKind = "track") -> Query:
        """A query from user text (see the module docstring); InputError when it cannot be one."""
        if not isinstance(text, str):
            raise InputError(f"a query must be text, got {type(text).__name__}")
        stripped = text.strip()
        if not stripped:
            raise InputError("the query is empty; say what to look for, e.g. 'Track the red circle.'")
        if len(stripped) > MAX_QUERY_CHARS:
            raise InputError(f"the query has {len(stripped)} characters; at most {MAX_QUERY_CHARS} are allowed")
        if _CONTROL_CHARS.search(stripped):
            raise InputError("the query contains control characters; send plain text such as 'Track all stars.'")
        if default_kind not in QUERY_KINDS:
            raise InputError(f"unknown query kind {default_kind!r}; use one of {', '.join(QUERY_KINDS)}")
        prefixed = _KIND_PREFIX.match(stripped)
        if prefixed is not None:
            kind = prefixed.group(1).lower()
            label = prefixed.group(2).strip()
            if not label:
                raise InputError(f"'{stripped}' names the kind but not what to look for; e.g. '{kind}: red circle'")
            return cls(text=stripped, kind=kind, prompt=prompt_for_query(label, kind))
        if is_full_sentence(stripped):
            return cls(text=stripped, kind=infer_kind(stripped), prompt=stripped)
        return cls(text=stripped, kind=default_kind, prompt=prompt_for_query(stripped, default_kind))


def infer_kind(sentence: str) -> QueryKind:
    """The kind of a full instruction: 'Track ...' tracks, 'How many ...' / 'Count ...' counts,
    anything else points."""
    if _TRACK_START.match(sentence):
        return "track"
    if _COUNT_START.match(sentence):
        return "count"
    return "point"


class ActiveQuery(NamedTuple):
    """A query as the pipeline sees it at one window."""

    index: int  # query_index: stable while the query lives (events, topics)
    uid: int  # new on every change; a new uid at an index means a new query there
    query: Query


class QuerySet:
    """The live queries of one stream (see the module docstring). Thread-safe."""

    def __init__(self, queries: Iterable[str | Query] = (), default_kind: QueryKind = "track",
                 max_queries: int = DEFAULT_MAX_QUERIES) -> None:
        if default_kind not in QUERY_KINDS:
            raise InputError(f"unknown query kind {default_kind!r}; use one of {', '.join(QUERY_KINDS)}")
        if max_queries < 1:
            raise InputError(f"max_queries must be at least 1, got {max_queries}")
        self.default_kind: QueryKind = default_kind
        self.max_queries = max_queries
        self._lock = threading.Lock()
        self._by_index: dict[int, ActiveQuery] = {}
        self._next_uid = 1
        self.version = 0  # +1 per change (set / add / remove)
        initial = list(queries)
        if initial:
            self.set_all(initial)

    # -- changes --------------------------------------------------------------------------------
    def _as_query(self, query: str | Query) -> Query:
        return query if isinstance(query, Query) else Query.parse(query, self.default_kind)

    def _make(self, index: int, query: Query) -> ActiveQuery:
        active = ActiveQuery(index, self._next_uid, query)
        self._next_uid += 1
        return active

    def set(self, query: str | Query) -> ActiveQuery:
        """Replace every query with this one, at index 0."""
        parsed = self._as_query(query)
        with self._lock:
            active = self._make(0, parsed)
            self._by_index = {0: active}
            self.version += 1
        return active

    def set_all(self, queries: Iterable[str | Query]) -> list[ActiveQuery]:
        """Replace every query with these, at indices 0, 1, ... (all validated before any change)."""
        parsed = [self._as_query(q) for q in queries]
        if len(parsed) > self.max_queries:
            raise InputError(f"{len(parsed)} queries given; at most {self.max_queries} run on one stream")
        with self._lock:
            self._by_index = {i: self._make(i, q) for i, q in enumerate(parsed)}
            self.version += 1
            return self._sorted()

    def add(self, query: str | Query) -> ActiveQuery:
        """Add a query at the smallest free index."""
        parsed = self._as_query(query)
        with self._lock:
            if len(self._by_index) >= self.max_queries:
                raise InputError(f"this stream already runs {self.max_queries} queries (the most allowed); "
                                 "remove one first")
            index = next(i for i in range(self.max_queries + 1) if i not in self._by_index)
            active = self._make(index, parsed)
            self._by_index[index] = active
            self.version += 1
        return active

    def remove(self, index: int) -> ActiveQuery:
        """Remove the query at `index`; IndexError (with the live indices) when there is none."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise InputError(f"a query index is an integer, got {index!r}")
        with self._lock:
            if index not in self._by_index:
                live = sorted(self._by_index) or "none"
                raise IndexError(f"no query at index {index}; live indices: {live}")
            removed = self._by_index.pop(index)
            self.version += 1
        return removed

    # -- reading --------------------------------------------------------------------------------
    def _sorted(self) -> list[ActiveQuery]:
        return [self._by_index[i] for i in sorted(self._by_index)]

    def snapshot(self) -> list[ActiveQuery]:
        """The live queries, by index (a copy: later changes do not touch it)."""
        with self._lock:
            return self._sorted()

    def describe(self) -> list[dict]:
        """JSON-ready list for status replies: index, text, kind, prompt."""
        return [{"index": a.index, "query": a.query.text, "kind": a.query.kind, "prompt": a.query.prompt}
                for a in self.snapshot()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_index)


__all__ = ["ActiveQuery", "MAX_QUERY_CHARS", "QUERY_KINDS", "Query", "QueryKind", "QuerySet", "infer_kind"]
