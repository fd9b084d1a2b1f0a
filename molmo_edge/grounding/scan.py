"""A forgiving, linear-time scanner for the grounding elements inside a model answer.

The model writes HTML-like elements (`<points coords="…" alt="…">label</points>`) inside free
text, and its output is often cut by a max-token stop, so this is not an HTML parser: it finds
the start tags of the three grounding tag names, reads their attributes as far as they go, and
finds the label and the closing tag. Everything else in the text is prose and is skipped.

Linear time matters because the input is untrusted model output (a runaway generation can be
megabytes). No regular expression here has nested quantifiers, and every search is bounded by the
next `<`: each `<`-free stretch of text is looked at by at most one tag, so the whole scan is O(n).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# `<points`, `<tracks` or `<point`, not followed by more name characters (`<pointer` is prose).
TAG_OPEN = re.compile(r"<\s*(points|tracks|point)(?![\w-])", re.IGNORECASE | re.ASCII)
_CLOSE_TAG = re.compile(r"<\s*/\s*(points|tracks|point)\s*>", re.IGNORECASE | re.ASCII)
_ATTR_NAME = re.compile(r"[A-Za-z_][\w:.-]*", re.ASCII)
_SPACE = re.compile(r"\s*")
_JUNK = re.compile(r"[^\sA-Za-z_<>/]+|/(?!>)", re.ASCII)
_UNQUOTED_VALUE = re.compile(r"[^\s<>\"'`]+")
_MAX_PROBLEMS_PER_TAG = 8
_PARTIAL_TAG_AT_END = re.compile(r"<\s*/?\s*([A-Za-z]*)\Z", re.ASCII)

# Quote styles seen around attribute values: plain, single, HTML-escaped, and JSON-escaped (\")
# for answers that went through one json.dumps too many. (opening, closing), matched ignoring case.
_QUOTES: tuple[tuple[str, str], ...] = (
    ('\\"', '\\"'),
    ('"', '"'),
    ("'", "'"),
    ("&quot;", "&quot;"),
    ("&#34;", "&#34;"),
    ("&#x22;", "&#x22;"),
    ("&apos;", "&apos;"),
    ("&#39;", "&#39;"),
)


@dataclass(slots=True)
class AttrValue:
    """One attribute value as written (not yet unescaped)."""

    raw: str
    at_char: int  # index of the value's first character in the text
    runs_to_end: bool  # the value ran into the end of the text (cut by a max-token stop)


@dataclass(slots=True)
class StartTag:
    name: str  # "points" | "tracks" | "point", lower case
    start_char: int  # index of "<"
    end_char: int  # just past ">" when closed, else where reading stopped
    attrs: dict[str, AttrValue] = field(default_factory=dict)
    closed: bool = False  # ">" or "/>" was seen
    self_closing: bool = False
    truncated: bool = False  # the text ended inside the tag
    problems: list[str] = field(default_factory=list)

    def note(self, problem: str) -> None:
        # A few per tag say what is wrong; a million repeats of it would not say more.
        if len(self.problems) < _MAX_PROBLEMS_PER_TAG:
            self.problems.append(problem)


@dataclass(slots=True)
class Content:
    """What follows a start tag: the label text and the closing tag."""

    raw_label: str | None
    end_char: int
    closed: bool  # a closing tag was found
    truncated: bool  # the text ended before the closing tag
    problems: list[str] = field(default_factory=list)


def _skip_space(text: str, i: int) -> int:
    return _SPACE.match(text, i).end()  # type: ignore[union-attr]  # `\s*` always matches


def _opening_quote(text: str, i: int) -> tuple[str, str] | None:
    head = text[i : i + 6].lower()
    for opening, closing in _QUOTES:
        if head.startswith(opening):
            return opening, closing
    return None


def _find_closing(text: str, closing: str, start: int, stop: int) -> int:
    """Index of `closing` in text[start:stop], ignoring ASCII case (`&QUOT;`), or -1."""
    pattern = _CLOSING_PATTERNS.get(closing)
    if pattern is None:
        pattern = _CLOSING_PATTERNS[closing] = re.compile(re.escape(closing), re.IGNORECASE | re.ASCII)
    m = pattern.search(text, start, stop)
    return m.start() if m else -1


_CLOSING_PATTERNS: dict[str, re.Pattern[str]] = {}


def _read_value(text: str, i: int, name: str, tag: StartTag, stop: int) -> int:
    """Read the value of attribute `name` starting at `i`; store it on `tag`; return the new index.

    `stop` is the index of the next "<" (or the end of the text): a quoted value never legitimately
    holds "<", so it bounds every search and the scan stays linear.
    """
    n = len(text)
    quote = _opening_quote(text, i)
    if quote is None:
        m = _UNQUOTED_VALUE.match(text, i)
        raw = m.group() if m else ""
        end = i + len(raw)
        if not raw and end < n:
            tag.note(f"attribute {name} at char {i} has '=' but no value")
        tag.attrs.setdefault(name, AttrValue(raw, i, runs_to_end=end >= n))
        return end
    opening, closing = quote
    start = i + len(opening)
    close = _find_closing(text, closing, start, stop)
    if close >= 0:
        tag.attrs.setdefault(name, AttrValue(text[start:close], start, runs_to_end=False))
        return close + len(closing)
    gt = text.find(">", start, stop)
    if gt >= 0:
        # `coords="1 1 100 200>label` : the quote was dropped, the tag still ends at ">".
        tag.note(f'attribute {name} at char {start}: closing quote missing before ">"')
        tag.attrs.setdefault(name, AttrValue(text[start:gt], start, runs_to_end=False))
        return gt
    if stop >= n:
        tag.attrs.setdefault(name, AttrValue(text[start:n], start, runs_to_end=True))
        tag.truncated = True
        return n
    tag.note(f"attribute {name} at char {start}: closing quote missing before the next tag")
    tag.attrs.setdefault(name, AttrValue(text[start:stop], start, runs_to_end=False))
    return stop


def read_start_tag(text: str, match: re.Match[str]) -> StartTag:
    """Read the attributes of the start tag that `TAG_OPEN` matched, as far as the text allows."""
    n = len(text)
    tag = StartTag(name=match.group(1).lower(), start_char=match.start(), end_char=match.end())
    i = match.end()
    # Every attribute of this tag lies before the next "<": find it once, not once per attribute.
    next_lt = text.find("<", i)
    next_lt = n if next_lt < 0 else next_lt
    junk_reported = repeat_reported = False  # once per tag each
    while True:
        i = _skip_space(text, i)
        if i >= n:
            tag.truncated = True
            break
        c = text[i]
        if c == ">":
            tag.closed, i = True, i + 1
            break
        if text.startswith("/>", i):
            tag.closed, tag.self_closing, i = True, True, i + 2
            break
        if c == "<":
            tag.note(f"<{tag.name}> start tag at char {tag.start_char} is not closed with '>'")
            break
        m = _ATTR_NAME.match(text, i)
        if m is None:
            junk = _JUNK.match(text, i)
            step = junk.end() - i if junk else 1
            if not junk_reported:
                tag.note(f"unexpected {text[i:i + step][:20]!r} inside <{tag.name}> tag at char {i}")
                junk_reported = True
            i += max(step, 1)
            continue
        name = m.group().lower()
        if name in tag.attrs and not repeat_reported:
            tag.note(f"attribute {name} repeated at char {i}; the first one is used")
            repeat_reported = True
        i = _skip_space(text, m.end())
        if i < n and text[i] == "=":
            i = _read_value(text, _skip_space(text, i + 1), name, tag, next_lt)
        else:
            tag.attrs.setdefault(name, AttrValue("", i, runs_to_end=i >= n))
    tag.end_char = i
    return tag


def read_content(text: str, tag: StartTag) -> Content:
    """Find the label and the closing tag after a closed, non-self-closing start tag.

    The label runs to the matching closing tag; other markup inside it (`<b>`) is kept as text.
    A new grounding start tag, or the end of the text, ends a label whose closing tag is missing.
    """
    n = len(text)
    start = tag.end_char
    i = start
    while True:
        lt = text.find("<", i)
        if lt < 0:
            return Content(
                text[start:], n, closed=False, truncated=True,
                problems=[f"<{tag.name}> element at char {tag.start_char}: the text ends before </{tag.name}>"],
            )
        close = _CLOSE_TAG.match(text, lt)
        if close is not None:
            problems = []
            if close.group(1).lower() != tag.name:
                problems.append(f"<{tag.name}> at char {tag.start_char} is closed by </{close.group(1)}>")
            return Content(text[start:lt], close.end(), closed=True, truncated=False, problems=problems)
        if TAG_OPEN.match(text, lt) is not None:
            return Content(
                text[start:lt], lt, closed=False, truncated=False,
                problems=[f"<{tag.name}> element at char {tag.start_char} has no </{tag.name}>"],
            )
        partial = _PARTIAL_TAG_AT_END.match(text, lt)
        if partial is not None and is_grounding_tag_prefix(partial.group(1)):
            # "…label</poi" : cut inside the closing tag.
            return Content(
                text[start:lt], n, closed=False, truncated=True,
                problems=[f"<{tag.name}> element at char {tag.start_char}: the text ends inside </{tag.name}>"],
            )
        i = lt + 1


def is_grounding_tag_prefix(name: str) -> bool:
    """True when `name` could be the start of points / tracks / point (empty counts)."""
    name = name.lower()
    return "points".startswith(name) or "tracks".startswith(name)


def partial_tag_at_end(text: str, pos: int) -> int | None:
    """Index of a cut-off grounding start tag (`<poi`, `<`, `< tr`) ending the text, or None."""
    lt = text.rfind("<", pos)
    if lt < 0:
        return None
    m = _PARTIAL_TAG_AT_END.match(text, lt)
    if m is None or "/" in m.group() or not is_grounding_tag_prefix(m.group(1)):
        return None
    return lt
