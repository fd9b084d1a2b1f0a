"""The Pipeline on a real (random-init, tiny) model, real video files and real threads.

The tiny model writes garbage text: that is the "malformed model output" case, and it still has to
give well-formed events. Tracking with meaningful answers is in test_pipeline_tracking.py.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

from molmo_edge.engine.backend import Backend
from molmo_edge.engine.engine import Engine
from molmo_edge.errors import ConfigError, InputError, MolmoEdgeError, SourceError
from molmo_edge.stream.events import Event
from molmo_edge.stream.pipeline import NO_POINTS_ERROR, Pipeline
from molmo_edge.stream.sampler import FrameSampler
from molmo_edge.stream.sources import open_source
from tests.stream.stream_media import damage_frame, write_mjpg_avi

MAX_NEW_TOKENS = 3  # garbage is garbage at any length; keep the tests fast


class CountingBackend(Backend):
    """A real backend that also records every frame sent through the ViT (by a hash of its pixels)."""

    def __init__(self, inner: Backend, fail_prefills: int = 0) -> None:
        self.inner = inner
        self.name = inner.name
        self.config, self.processor, self.device = inner.config, inner.processor, inner.device
        self.encoded_pixel_hashes: list[str] = []
        self.fail_prefills = fail_prefills  # the next this many prefills raise (a model failure)

    def encode_visual(self, pixel_values, pooling):
        self.encoded_pixel_hashes.append(hashlib.sha1(pixel_values.numpy().tobytes()).hexdigest())
        return self.inner.encode_visual(pixel_values, pooling)

    def prefill(self, input_ids, visual_tokens, mm_token_type_ids):
        if self.fail_prefills > 0:
            self.fail_prefills -= 1
            raise InputError("injected failure: the prompt does not fit")
        return self.inner.prefill(input_ids, visual_tokens, mm_token_type_ids)

    def decode(self, token_id, state):
        return self.inner.decode(token_id, state)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint_dir: Path) -> Engine:
    with Engine.from_pretrained(tiny_checkpoint_dir, device="cpu") as loaded:
        yield loaded


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_mjpg_avi(tmp_path / "clip.avi", n_frames=40, fps=10.0)  # 4 s: 8 frames at 2 fps


def test_malformed_model_output_gives_events_with_the_parse_problem(engine, clip):
    events = list(Pipeline(engine, source=clip, queries=["Track the red circle.", "count: stars"],
                           window=4, stride=2, max_new_tokens=MAX_NEW_TOKENS))
    assert len(events) == 2 * 3  # windows after sampled frames 4, 6, 8; two queries each
    for event in events:
        assert NO_POINTS_ERROR in event.parse_errors
        assert event.objects == [] and event.count == 0 and event.raw_text
        assert Event.from_dict(event.to_dict()) == event  # serialisable as it is
    assert [e.seq for e in events if e.query_index == 0] == [0, 1, 2]
    assert {e.query for e in events} == {"Track the red circle.", "count: stars"}


def test_each_frame_is_encoded_once_however_many_windows_contain_it(engine, clip):
    backend = CountingBackend(engine.backend)
    pipeline = Pipeline(backend, source=clip, queries=["Track all stars.", "Point to the cup"],
                        window=6, stride=1, min_window_frames=1, max_new_tokens=MAX_NEW_TOKENS)
    events = list(pipeline)
    stats = pipeline.stats
    assert stats.frames_sampled == 8 and stats.windows == 8  # a window after every sampled frame
    assert len(events) == 16
    # every frame is in up to 6 windows and asked about by 2 queries, yet goes through the ViT once
    assert len(backend.encoded_pixel_hashes) == stats.frames_sampled == stats.frames_encoded
    assert len(set(backend.encoded_pixel_hashes)) == len(backend.encoded_pixel_hashes)
    assert stats.cache_hits == sum(min(k, 6) for k in range(1, 9)) - 8  # window frames minus new ones


def test_cached_windows_answer_exactly_like_the_whole_clip(engine, clip):
    pipeline = Pipeline(engine, queries=["Track the red circle."], window=4, stride=2,
                        max_new_tokens=MAX_NEW_TOKENS)  # push mode: we hand it the frames
    sampler = FrameSampler(target_fps=2.0)
    sampled, events = [], []
    with open_source(clip) as source:
        for frame in source:
            if sampler.offer(frame.t_s):
                sampled.append(frame)
            events.extend(pipeline.process(frame))
    events.extend(pipeline.flush())
    assert len(events) == 3
    for event in events:
        frames = [f for f in sampled if event.window_t0_s <= f.t_s <= event.window_t1_s]
        reference = engine.ask_video([f.rgb for f in frames], [f.t_s for f in frames], "Track the red circle.",
                                     max_new_tokens=MAX_NEW_TOKENS)
        assert event.raw_text == reference.text


def test_query_changes_take_effect_at_the_next_window(engine, clip):
    pipeline = Pipeline(engine, queries=["Track the red circle."], window=2, stride=1, min_window_frames=1,
                        max_new_tokens=MAX_NEW_TOKENS)
    per_frame = []
    with open_source(clip) as source:
        for frame in source:
            events = pipeline.process(frame)
            if events:
                per_frame.append(events)
                if len(per_frame) == 2:
                    pipeline.add_query("count: stars")
                if len(per_frame) == 4:
                    pipeline.set_query("Point to all squares")
                if len(per_frame) == 6:
                    pipeline.remove_query(0)
    texts = [[(e.query_index, e.query) for e in window] for window in per_frame]
    assert texts[:2] == [[(0, "Track the red circle.")]] * 2
    assert texts[2:4] == [[(0, "Track the red circle."), (1, "count: stars")]] * 2
    assert texts[4:6] == [[(0, "Point to all squares")]] * 2
    assert texts[6:] == [[]] * len(texts[6:])
    assert [e.seq for window in per_frame for e in window if e.query_index == 0] == list(range(6))  # never restarts


def test_stop_from_another_thread_finishes_the_window_in_progress(engine, clip):
    delivered = []

    class StopFromAnotherThread:
        def write(self, event):
            delivered.append(event)
            if len(delivered) == 1:  # while the first window's first event is being delivered
                stopper = threading.Thread(target=pipeline.stop)
                stopper.start()
                stopper.join()
            return True

    pipeline = Pipeline(engine, source=clip, queries=["Track all circles.", "count: stars", "point: cup"],
                        sinks=[StopFromAnotherThread()], window=2, stride=1, max_new_tokens=MAX_NEW_TOKENS)
    yielded = list(pipeline)
    assert pipeline.stopped
    assert [e.query_index for e in yielded] == [0, 1, 2]  # the whole window, then nothing more
    assert yielded == delivered
    assert pipeline.stats.windows == 1


def test_a_corrupt_frame_is_skipped_and_counted(engine, tmp_path):
    clip = write_mjpg_avi(tmp_path / "damaged.avi", n_frames=30, fps=10.0)
    damage_frame(clip, 12)
    pipeline = Pipeline(engine, source=clip, queries=["Track all stars."], window=2, stride=1,
                        max_new_tokens=MAX_NEW_TOKENS)
    events = list(pipeline)
    stats = pipeline.stats
    assert stats.source.corrupt_frames == 1
    assert stats.frames_in == 29
    assert len(events) == stats.windows >= 4
    assert events[-1].window_t1_s == pytest.approx(2.5, abs=0.11)  # went on to the end of the file


def test_a_model_failure_is_an_event_and_the_stream_goes_on(engine, clip):
    backend = CountingBackend(engine.backend, fail_prefills=1)
    events = list(Pipeline(backend, source=clip, queries=["Track all stars."], window=4, stride=2,
                           max_new_tokens=MAX_NEW_TOKENS))
    assert len(events) == 3
    assert events[0].raw_text == "" and events[0].parse_errors[0].startswith("model error: InputError")
    assert events[1].raw_text and NO_POINTS_ERROR in events[1].parse_errors


def test_a_model_that_always_fails_stops_the_pipeline(engine, tmp_path):
    clip = write_mjpg_avi(tmp_path / "long.avi", n_frames=150, fps=10.0)
    backend = CountingBackend(engine.backend, fail_prefills=10_000)
    with pytest.raises(MolmoEdgeError, match="10 windows in a row"):
        list(Pipeline(backend, source=clip, queries=["Track all stars."], window=1, stride=1))


def test_latency_breakdown(engine, clip):
    events = list(Pipeline(engine, source=clip, queries=["Track all stars."], window=4, stride=2,
                           max_new_tokens=MAX_NEW_TOKENS))
    first = events[0].latency_ms
    assert first.vision > 0 and first.prefill > 0 and first.decode > 0
    assert first.total >= first.vision + first.prefill
    assert all(e.latency_ms.capture_to_publish is not None and e.latency_ms.capture_to_publish >= 0 for e in events)


def test_bad_settings_fail_fast_with_clear_errors(engine, tmp_path):
    with pytest.raises(SourceError, match="cannot use"):
        Pipeline(tmp_path / "missing.mp4", source=tmp_path / "missing.mp4")  # the source is checked first
    with pytest.raises(ConfigError, match="model must be"):
        Pipeline(model=42, source=None)
    with pytest.raises(ConfigError, match="stride"):
        Pipeline(engine, window=2, stride=3)
    with pytest.raises(ConfigError, match="no source"):
        next(iter(Pipeline(engine, queries=["Track all stars."])))
    with pytest.raises(InputError, match="empty"):
        Pipeline(engine, queries=["   "])
    with pytest.raises(ConfigError, match="sink"):
        Pipeline(engine, sinks=[42])
    with pytest.raises(ConfigError, match="temprature"):
        Pipeline(engine, generation={"temprature": 0.5})  # a typo is caught before the first window


def test_a_pipeline_without_queries_encodes_but_makes_no_events(engine, clip):
    pipeline = Pipeline(engine, source=clip, window=4, stride=2)
    assert list(pipeline) == []
    assert pipeline.stats.windows == 3 and pipeline.stats.frames_encoded == 8


def test_pause_and_resume_in_push_mode(engine, clip):
    pipeline = Pipeline(engine, queries=["Track all stars."], window=2, stride=1, max_new_tokens=MAX_NEW_TOKENS)
    with open_source(clip) as source:
        frames = list(source)
    events = [e for f in frames[:10] for e in pipeline.process(f)]
    pipeline.pause()
    assert [e for f in frames[10:20] for e in pipeline.process(f)] == []
    pipeline.resume()
    after = [e for f in frames[20:] for e in pipeline.process(f)]
    assert events and after
    assert after[0].window_t0_s >= frames[20].t_s  # the window restarted: nothing from before the pause


def test_sinks_receive_every_event_and_a_failing_sink_is_counted(engine, clip):
    received = []

    def broken(event):
        raise RuntimeError("disk on fire")

    pipeline = Pipeline(engine, source=clip, queries=["Track all stars."], sinks=[received.append, broken],
                        window=4, stride=2, max_new_tokens=MAX_NEW_TOKENS)
    events = list(pipeline)
    assert received == events and pipeline.stats.sink_errors == len(events)


def test_frames_of_a_window_keep_their_order_and_size(engine, tmp_path):
    # A clip whose frames differ in content, so a wrong frame order would change the prompt's tokens.
    path = tmp_path / "ramp.avi"
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (64, 48))
    for i in range(12):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    events = list(Pipeline(engine, source=path, queries=["Track all stars."], window=3, stride=1,
                           max_new_tokens=MAX_NEW_TOKENS))
    assert [(e.window_t0_s, e.window_t1_s) for e in events][:3] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0)]
    assert all(e.frame_width_px == 64 and e.frame_height_px == 48 for e in events)
