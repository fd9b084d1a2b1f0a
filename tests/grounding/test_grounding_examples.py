"""Concrete answers (the Molmo2 paper's appendix, the Ai2 playground's forms, Molmo v1) and the
malformed variants a real model produces, each with the values and errors it must give."""
from __future__ import annotations

import pytest

from molmo_edge.grounding import GroundedPoint, GroundingError, parse

PAPER_POINTS = ('<points coords="1 1 555 169;2 3 649 154 4 709 162;5 5 758 175 6 808 183 7 852 187">\n'
                "Inline text\n</points>")
PAPER_TRACKS = ('<tracks coords="0.0 1 635 522;0.5 1 606 490 2 511 124;1.0 2 515 164;1.5 2 520 168">\n'
                "Inline text\n</tracks>")


def test_paper_multi_image_points():
    r = parse(PAPER_POINTS)
    assert r.ok and r.kind == "points" and r.label == "Inline text"
    expected = [(1, 555, 169, 1), (3, 649, 154, 2), (4, 709, 162, 2), (5, 758, 175, 5), (6, 808, 183, 5),
                (7, 852, 187, 5)]
    assert [(p.object_id, round(p.x * 1000), round(p.y * 1000), p.image_index) for p in r.points] == expected
    assert all(p.t_s is None for p in r.points)
    assert list(r.by_image()) == [1, 2, 5]
    assert r.object_ids == [1, 3, 4, 5, 6, 7]
    # count = distinct ids (the paper's example skips id 2, so this is 6, not the last id 7)
    assert r.count == 6


def test_paper_tracks():
    r = parse(PAPER_TRACKS)
    assert r.ok and r.kind == "tracks" and r.label == "Inline text" and r.count == 2
    assert list(r.by_time()) == [0.0, 0.5, 1.0, 1.5]
    tracks = r.by_object()
    assert [(p.t_s, p.x, p.y) for p in tracks[1]] == [(0.0, 0.635, 0.522), (0.5, 0.606, 0.490)]
    assert [(p.t_s, p.x, p.y) for p in tracks[2]] == [(0.5, 0.511, 0.124), (1.0, 0.515, 0.164), (1.5, 0.520, 0.168)]
    assert all(p.image_index is None for p in r.points)


def test_tab_separated_frames_read_like_semicolons():
    assert parse(PAPER_TRACKS.replace(";", "\t")).points == parse(PAPER_TRACKS).points
    assert parse(PAPER_POINTS.replace(";", "\t")).points == parse(PAPER_POINTS).points


def test_video_points_use_timestamps():
    r = parse('<points coords="0.5 1 100 200 2 300 400;12.0 3 050 060">cups</points>')
    assert r.ok and r.kind == "points"
    assert [(p.object_id, p.t_s, p.image_index) for p in r.points] == [(1, 0.5, None), (2, 0.5, None), (3, 12.0, None)]


def test_kind_hint_decides_integer_indices():
    text = '<points coords="2 1 100 200">cup</points>'
    assert parse(text).points[0].image_index == 2
    video = parse(text, kind_hint="video").points[0]
    assert (video.t_s, video.image_index) == (2.0, None)
    assert parse('<points coords="1.5 1 100 200">cup</points>', kind_hint="image").errors
    with pytest.raises(GroundingError, match="kind_hint"):
        parse(text, kind_hint="audio")  # type: ignore[arg-type]


def test_counting_wrapper_with_alt():
    text = ('Counting the <points coords="1 1 073 160 2 173 600 3 258 725 4 323 735 5 353 160" alt="boats">'
            "the boats</points> shows a total of 5.")
    r = parse(text)
    assert r.ok and r.count == 5 and r.label == "the boats" and r.alt == "boats"
    assert r.points[0] == GroundedPoint(1, 0.073, 0.16, image_index=1)


def test_there_are_wrapper_and_none():
    r = parse('There are 2 <points coords="1 1 100 100 2 900 900">red circles</points>.')
    assert r.ok and r.count == 2 and len(r.points) == 2
    none = parse("There are none.")
    assert none.none and none.kind == "none" and none.count == 0 and none.points == [] and none.ok


def test_wrapper_count_that_disagrees_with_the_points_is_reported():
    r = parse('Counting the <points coords="1 1 100 100 2 900 900">cups</points> shows a total of 3.')
    assert r.count == 3
    assert any("says 3" in e and "2 distinct" in e for e in r.errors)


def test_plain_text_is_text():
    r = parse("I cannot see any cups in this image.")
    assert r.kind == "text" and r.count is None and not r.none and r.points == [] and r.ok


def test_legacy_molmo_v1_points_in_percent():
    r = parse('<point x="12.3" y="45.6" alt="cup">cup</point>')
    assert r.ok and r.kind == "legacy" and r.points == [GroundedPoint(1, 0.123, 0.456)] and r.alt == "cup"
    r = parse('Counting the <points x1="9.1" y1="11.7" x2="17.2" y2="41.3" alt="the boats">the boats</points> '
              "shows a total of 2.")
    assert r.ok and r.count == 2 and r.label == "the boats"
    assert r.points == [GroundedPoint(1, 0.091, 0.117), GroundedPoint(2, 0.172, 0.413)]
    bad = parse('<points x1="10" y1="20" x2="130" y2="20" x3="5">p</points>')
    assert bad.points == [GroundedPoint(1, 0.1, 0.2)]
    assert any("out of range 0..100" in e for e in bad.errors)
    assert any("no y value" in e for e in bad.errors)


def test_truncated_output_keeps_the_complete_points():
    r = parse('<points coords="1 1 123 456 2 23')
    assert r.points == [GroundedPoint(1, 0.123, 0.456, image_index=1)]
    assert r.truncated and r.count == 1
    assert any(e.startswith("truncated <points> element at char 0: kept 1 complete points") for e in r.errors)


@pytest.mark.parametrize("cut, kept", [
    ('<points coords="1 1 100 200 2 300 40', 1),   # "40" was on its way to "40x"
    ('<points coords="1 1 100 200 2 300 100', 1),  # "100" may be the start of "1000"
    ('<points coords="1 1 100 200 2 300 1000', 2),
    ('<points coords="1 1 100 200 2 300 400', 2),
    ('<points coords="1 1 100 200 2 300 400 ', 2),
    ('<points coords="1 1 100 200;2', 1),
    ('<points coords="1 1 100 200 2 300 400">red ci', 2),
    ('<points coords="1 1 100 200 2 300 400">red circles</poi', 2),
    ('<tracks coords="0.0 1 100 200;0.', 1),
])
def test_cut_points_are_dropped_only_when_they_may_be_incomplete(cut, kept):
    r = parse(cut)
    assert len(r.points) == kept and r.truncated and r.errors


def test_missing_closing_tag_and_several_elements_with_garbage_between():
    text = ('Sure! <points coords="1 1 100 200">cups @@##</span> <POINTS COORDS="1 1 300 400">Plates</Points>'
            ' ~~ <tracks coords="0.0 1 500 500">ball</tracks> trailing')
    r = parse(text)
    assert [e.tag for e in r.elements] == ["points", "points", "tracks"]
    assert [e.label for e in r.elements] == ["cups @@##</span>", "Plates", "ball"]
    assert [(p.x, p.t_s) for p in r.points] == [(0.1, None), (0.3, None), (0.5, 0.0)]
    assert r.kind == "points" and r.label == "cups @@##</span>" and not r.truncated
    assert r.errors == ["<points> element at char 6 has no </points>"]  # the first one is never closed

    r = parse('<points coords="1 1 100 200">cups <points coords="1 1 300 400">plates</points>')
    assert len(r.points) == 2 and [e.label for e in r.elements] == ["cups", "plates"]
    assert any("has no </points>" in e for e in r.errors)


def test_whitespace_uppercase_and_escaped_quotes():
    expected = [GroundedPoint(1, 0.1, 0.2, image_index=1), GroundedPoint(2, 0.3, 0.4, image_index=1)]
    for text in [
        '< points  coords = "  1   1 100 200  2 300 400 " >cups</ points >',
        '<POINTS COORDS="1 1 100 200 2 300 400">cups</POINTS>',
        "<points coords='1 1 100 200 2 300 400'>cups</points>",
        "<points coords=&quot;1 1 100 200 2 300 400&quot;>cups</points>",
        '<points coords=\\"1 1 100 200 2 300 400\\">cups</points>',
        '<points\ncoords="1 1 100 200\n2 300 400"\n>\ncups\n</points>',
    ]:
        r = parse(text)
        assert r.points == expected and r.label == "cups" and r.ok, (text, r)


def test_a_fully_html_escaped_answer_is_read_and_noted():
    import html

    text = 'Counting the <points coords="1 1 100 200 2 300 400">cups &amp; mugs</points> shows a total of 2.'
    r = parse(html.escape(text))
    assert r.points == parse(text).points and r.count == 2 and r.label == "cups & mugs"
    assert r.errors == ["the answer was HTML-escaped; char positions refer to the unescaped text"]


@pytest.mark.parametrize("coords, message", [
    ("1 1 1234 200", "coordinate '1234' out of range 0..1000"),
    ("1 1 -5 200", "coordinate '-5' out of range"),
    ("1 1 nan 200", "coordinate 'nan' is not a number"),
    ("1 1 inf 200", "coordinate 'inf' is not a number"),
    ("1 1 1_0 200", "coordinate '1_0' is not a number"),
    ("1 1 ١٢٣ 200", "is not a number"),  # Arabic-Indic digits: int() would take them, the model never writes them
    ("1 0 100 200", "object id '0' is not an integer >= 1"),
    ("1 1.5 100 200", "object id '1.5'"),
    ("0 1 100 200", "image index '0' is not an integer >= 1"),
    ("1 1 100", "odd number of values"),
])
def test_bad_values_are_dropped_and_named(coords, message):
    r = parse(f'<points coords="{coords}">x</points>')
    assert r.points == [] and not r.truncated
    assert any(message in e for e in r.errors), r.errors


def test_floats_where_ints_are_expected_are_kept_and_noted():
    r = parse('<points coords="1 1 100.5 200 2.0 300 400">x</points>')
    assert [(p.object_id, p.x) for p in r.points] == [(1, 0.1005), (2, 0.3)]
    assert any("integers expected" in e for e in r.errors)


def test_negative_frame_time_and_element_without_coords():
    r = parse('<tracks coords="-1.0 1 100 200;0.5 1 300 400">x</tracks>')
    assert [p.t_s for p in r.points] == [0.5] and any("frame time '-1.0'" in e for e in r.errors)
    r = parse("<points>cats</points>")
    assert r.points == [] and r.label == "cats" and any("no coords" in e for e in r.errors)


def test_errors_are_capped_for_huge_garbage():
    r = parse('<points coords="' + "1 x y " * 10_000 + '">x</points>')
    assert len(r.errors) == 51 and r.errors[-1].startswith("... and ")


def test_non_str_is_a_type_error():
    for bad in (None, b"<points>", 3, ["a"]):
        with pytest.raises(TypeError, match="str"):
            parse(bad)  # type: ignore[arg-type]
