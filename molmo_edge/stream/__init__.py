"""The streaming runtime: sources -> sampler -> window + feature cache -> engine -> tracker -> events.

Modules (import what you need; nothing heavy is imported here):
    frame.py        `Frame` (rgb uint8 [H, W, 3], stamp_ns, t_s, index, source_id)
    readers.py      device-specific frame readers (camera, URL, GStreamer, file, folder, synthetic)
    source_spec.py  "0" / "clip.mp4" / "rtsp://..." / "synthetic:3" -> `SourceSpec`
    sources.py      `open_source`, `FrameSource` (`LiveSource`, `InOrderSource`), `SourceStats`
    sampler.py      `FrameSampler`: frames at the model's fps, by timestamp
    tracker.py      `WindowTracker`: window-local object ids -> persistent track ids
    events.py       `Event`, the versioned message every output carries
    window.py       `SlidingWindow`: the last N sampled frames, each encoded once (feature cache)
    queries.py      `Query`, `QuerySet`: pointing / counting / tracking queries, changeable live
    pipeline.py     `Pipeline`: model + source + queries in, events out (pull or push mode)
    annotate.py     points and track ids drawn on frames; annotated video; contact sheet
The ZeroMQ daemon that serves a pipeline is an adapter: `molmo_edge.publish.daemon`.
"""
