"""The chance level the cross-process node test compares the shipped model's points with, and the
query it asks."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rclpy")
from molmo_edge.training.scenes import SceneSimulator  # noqa: E402
from tests.ros.node_helpers import (  # noqa: E402
    chance_tail_probability,
    object_under,
    shape_area_fraction,
    visible_shape_query,
)

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("hits", [0, 1, 3, 7, 10])
def test_tail_probability_with_equal_chances_is_the_binomial_tail(hits):
    n, p = 10, 0.13
    expected = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(hits, n + 1))
    assert chance_tail_probability(hits, [p] * n) == pytest.approx(expected, rel=1e-12)


def test_tail_probability_with_mixed_chances_matches_enumeration():
    chances = [0.05, 0.5, 0.2, 0.9]
    outcomes = np.array(np.meshgrid(*[[0, 1]] * 4, indexing="ij")).reshape(4, -1).T  # [16, 4]
    weights = np.prod(np.where(outcomes == 1, chances, 1 - np.array(chances)), axis=1)
    for hits in range(5):
        assert chance_tail_probability(hits, chances) == pytest.approx(weights[outcomes.sum(1) >= hits].sum())


def test_the_area_fraction_bounds_where_object_under_finds_the_shape():
    """Every pixel object_under puts on the shape is inside the grown area, so the area is a
    chance level the test can only overstate."""
    scene = SceneSimulator(5, 96, 96)
    frame = scene.frame_at(0.5)
    shape = frame.objects[0].shape
    rendered = SimpleNamespace(frame_at=lambda t_s: frame)  # the scene, rendered once
    on_shape = np.zeros((96, 96), bool)
    for v in range(96):
        for u in range(96):
            scene_id = object_under(rendered, 0.5, u, v, grow_px=2)
            on_shape[v, u] = bool(scene_id) and frame.object(scene_id).shape == shape
    fraction = shape_area_fraction(scene, 0.5, shape, grow_px=2)
    assert on_shape.any() and on_shape.mean() <= fraction < 1.0
    assert shape_area_fraction(scene, 0.5, shape) == pytest.approx(
        np.isin(frame.label_map, [o.object_id for o in frame.objects if o.shape == shape]).mean())


def test_the_query_names_a_shape_that_stays_in_view_for_the_whole_run():
    """The node's first window comes seconds after the camera starts: a shape seen only at t = 0
    (seed 5's triangle leaves by 6.5 s) would leave the points nothing to land on."""
    scene = SceneSimulator(5, 256, 256)
    shape, query = visible_shape_query(scene, 0.0, 40.0)
    assert query == f"Track all {shape}s." and shape != "triangle"
    for t_s in np.arange(0.0, 40.0, 0.25):  # finer than the helper samples
        assert max(o.visible_fraction for o in scene.frame_at(float(t_s)).objects if o.shape == shape) >= 0.4
    with pytest.raises(ValueError, match="keeps no shape"):
        visible_shape_query(SceneSimulator(5, 256, 256, n_objects=0))
