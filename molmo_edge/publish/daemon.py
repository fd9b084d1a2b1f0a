"""The serve loop behind `molmo-edge serve`: a Pipeline, a ZeroMQ publisher, a control socket.

    daemon = Daemon(DaemonConfig(source="0", queries=["Track the red circle."],
                                 pub="tcp://127.0.0.1:5560", control="tcp://127.0.0.1:5562"))
    exit_code = daemon.run()           # until SIGTERM / SIGINT, max_windows, max_seconds or the end

What it runs, all in one process:
- the pipeline in the main thread: source -> sampler -> window + feature cache -> model ->
  tracker -> events; each event goes to the PUB socket (never blocks: the publisher drops for
  slow subscribers), the optional latest-state socket and the optional JSONL file;
- the control socket (ROUTER, its own thread): set_query / add_query / remove_query /
  list_queries / pause / resume / status; bad requests get `{"ok": false, "error": ...}` and the
  daemon goes on;
- a status logger thread: one `status` log record every `status_interval_s`.

Shutdown: the first SIGTERM or SIGINT asks the pipeline to stop; the window in progress finishes
and its events are published, then the sockets close (after `shutdown_grace_s`, so ZeroMQ can
hand the last message to subscribers) and `run()` returns 0. A second signal aborts at once.
Exit codes: 0 clean stop (signal, limits, end of a file), 1 the source failed for good or the
model failed repeatedly.

Logs: plain text, or JSON lines on stderr with `log_json=True` (`configure_logging`): one object
per record with `ts`, `level`, `logger`, `msg` and the record's fields (`event`, `status`, ...).

Layering: the daemon is an adapter (publish ← stream ← core): it imports the stream and the
ZeroMQ parts of `molmo_edge.publish`; nothing in the stream or the core imports it.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from molmo_edge.errors import MolmoEdgeError, SourceError
from molmo_edge.publish.control import ControlServer
from molmo_edge.publish.curve import CurveServerConfig
from molmo_edge.publish.jsonl import JsonlSink
from molmo_edge.publish.zmq_publisher import EventPublisher, PublisherConfig
from molmo_edge.stream.events import Event
from molmo_edge.stream.pipeline import Pipeline, PipelineConfig
from molmo_edge.stream.source_spec import parse_source_spec

log = logging.getLogger("molmo_edge.serve")

DEFAULT_PUB = "tcp://127.0.0.1:5560"
DEFAULT_CONTROL = "tcp://127.0.0.1:5562"


class DaemonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    source: str  # camera index, path, URL, GStreamer pipeline or synthetic:SEED[:WxH]
    queries: list[str] = Field(default_factory=list)
    model: str | None = None  # checkpoint or bundle folder; None: the shipped model
    backend: str = "auto"
    device: str | None = None
    dtype: str | None = None
    quantization: str | None = None
    pub: str = DEFAULT_PUB
    latest: str | None = None  # single-frame latest-state PUB for conflating subscribers
    control: str = DEFAULT_CONTROL
    topic: str = "events"
    send_hwm: int = Field(100, ge=1)
    jsonl: Path | None = None
    curve_secret_key: Path | None = None  # this server's .key_secret: encrypt pub + control
    curve_clients_dir: Path | None = None  # allowed clients' public .key files
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    source_options: dict[str, Any] = Field(default_factory=dict)  # SourceConfig fields
    status_interval_s: float = Field(10.0, gt=0)
    shutdown_grace_s: float = Field(0.25, ge=0)

    @model_validator(mode="after")
    def _curve_pair(self) -> DaemonConfig:
        if self.curve_clients_dir is not None and self.curve_secret_key is None:
            raise ValueError("curve_clients_dir needs curve_secret_key (the server's .key_secret)")
        return self


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: ts (unix s), level, logger, msg, plus the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": round(record.created, 6), "level": record.levelname,
                                 "logger": record.name, "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextLogFormatter(logging.Formatter):
    """Plain text, with the record's `fields` appended as compact JSON."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + json.dumps(fields, default=str, separators=(",", ":"), ensure_ascii=False)
        return text


def configure_logging(json_lines: bool = False, level: int = logging.INFO) -> None:
    """Log to stderr, as text or as JSON lines (replaces the root logger's handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if json_lines else TextLogFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def _fields(**fields: Any) -> dict[str, Any]:
    return {"fields": fields}


class DaemonControl:
    """The control socket's handler: queries and pause/resume go to the pipeline. Thread-safe
    (every call only touches the pipeline's thread-safe API or reads counters)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    @property
    def pipeline(self) -> Pipeline:
        pipeline = self.daemon.pipeline
        if pipeline is None:
            raise MolmoEdgeError("the daemon is still loading the model; try again in a moment")
        return pipeline

    def set_query(self, query: str) -> dict[str, Any]:
        active = self.pipeline.set_query(query)
        log.info("query set", extra=_fields(query=active.query.text, query_index=active.index))
        return {"index": active.index, "kind": active.query.kind, "queries": self.pipeline.query_set.describe()}

    def add_query(self, query: str) -> dict[str, Any]:
        active = self.pipeline.add_query(query)
        log.info("query added", extra=_fields(query=active.query.text, query_index=active.index))
        return {"index": active.index, "kind": active.query.kind, "queries": self.pipeline.query_set.describe()}

    def remove_query(self, index: int) -> dict[str, Any]:
        removed = self.pipeline.remove_query(index)
        log.info("query removed", extra=_fields(query=removed.query.text, query_index=removed.index))
        reply: dict[str, Any] = {"removed": removed.query.text, "queries": self.pipeline.query_set.describe()}
        if not reply["queries"]:
            reply["note"] = "no queries left: no events until one is added"
        return reply

    def list_queries(self) -> dict[str, Any]:
        return {"queries": self.pipeline.query_set.describe()}

    def pause(self) -> dict[str, Any]:
        self.pipeline.pause()
        log.info("paused")
        return {"paused": True}

    def resume(self) -> dict[str, Any]:
        self.pipeline.resume()
        log.info("resumed")
        return {"paused": False}

    def status(self) -> dict[str, Any]:
        return self.daemon.status()


class Daemon:
    """See the module docstring. `run()` once per Daemon."""

    def __init__(self, config: DaemonConfig, model: Any = None) -> None:
        """`model`: a Backend or Engine to serve instead of loading `config.model` (embedding the
        daemon in a program that already holds a model); it is not closed by the daemon."""
        self.config = config
        self.model = model
        self.pipeline: Pipeline | None = None
        self.publisher = None
        self.control_server = None
        self.jsonl = None
        self._stop_requested = threading.Event()
        self._stop_reason: str | None = None
        self._started_monotonic = time.monotonic()
        self._signals = 0

    # -- public ----------------------------------------------------------------------------------
    def request_stop(self, reason: str = "requested") -> None:
        """Finish the window in progress, publish it, then shut down (thread- and signal-safe)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop_requested.set()
        if self.pipeline is not None:
            self.pipeline.stop()

    def status(self) -> dict[str, Any]:
        """Counters and settings, JSON-ready (the control socket's `status` reply)."""
        pipeline = self.pipeline.stats if self.pipeline is not None else None
        source = pipeline.source if pipeline is not None and pipeline.source is not None else None
        publisher = self.publisher.stats if self.publisher is not None else None
        # counter name -> (stats object, its field); a part that is not running counts 0
        fields = {
            "frames_in": (pipeline, "frames_in"), "frames_sampled": (pipeline, "frames_sampled"),
            "frames_encoded": (pipeline, "frames_encoded"), "cache_hits": (pipeline, "cache_hits"),
            "windows": (pipeline, "windows"), "events": (pipeline, "events"),
            "events_published": (publisher, "sent"), "frames_dropped": (source, "frames_dropped"),
            "parse_failures": (pipeline, "parse_failures"), "model_errors": (pipeline, "model_errors"),
            "reconnects": (source, "reconnects"), "source_failures": (source, "failures"),
            "corrupt_frames": (source, "corrupt_frames"),
        }
        counters = {name: getattr(stats, field) if stats else 0 for name, (stats, field) in fields.items()}
        counters["events_dropped"] = (publisher.dropped + publisher.send_errors + publisher.encode_errors
                                      if publisher else 0)
        counters["jsonl_errors"] = self.jsonl.stats.errors if self.jsonl is not None else 0
        return {
            "state": self._state(pipeline),
            "uptime_s": round(time.monotonic() - self._started_monotonic, 3),
            "source": self.config.source,
            "source_connected": bool(source.connected) if source else False,
            "queries": self.pipeline.query_set.describe() if self.pipeline is not None else [],
            "counters": counters,
            "windows_per_s": round(pipeline.windows_per_s, 4) if pipeline else 0.0,
            "last_latency_ms": pipeline.last_latency_ms.model_dump() if pipeline and pipeline.last_latency_ms else None,
            "endpoints": {"pub": getattr(self.publisher, "endpoint", None),
                          "latest": getattr(self.publisher, "latest_endpoint", None),
                          "control": getattr(self.control_server, "endpoint", None)},
            "pipeline": pipeline.model_dump(mode="json") if pipeline else None,
            "publisher": publisher.model_dump() if publisher else None,
        }

    def _state(self, pipeline) -> str:
        if self._stop_requested.is_set():
            return "stopping"
        if pipeline is None:
            return "starting"
        return "paused" if pipeline.paused else "running"

    def run(self, install_signal_handlers: bool = True) -> int:
        """Serve until stopped; the exit code (see the module docstring)."""
        previous_handlers = self._install_signals() if install_signal_handlers else {}
        status_thread = None
        exit_code = 0
        try:
            parse_source_spec(self.config.source)  # a mistyped source fails before any socket is bound
            self._start_outputs()
            self.pipeline = self._make_pipeline()
            if self._stop_requested.is_set():  # a signal arrived while the model was loading
                self.pipeline.stop()
            log.info("serving", extra=_fields(source=self.config.source, queries=self.pipeline.query_set.describe(),
                                              pub=self.publisher.endpoint, latest=self.publisher.latest_endpoint,
                                              control=self.control_server.endpoint,
                                              backend=self.pipeline.engine.backend.name))
            status_thread = threading.Thread(target=self._log_status_every, name="molmo-edge-status", daemon=True)
            status_thread.start()
            for event in self.pipeline:
                self._log_event(event)
            if self._stop_reason is None:
                self._stop_reason = self._end_reason()
        except MolmoEdgeError as exc:
            if self.pipeline is None:
                raise  # a setup problem (source spec, model, ports, keys): the CLI prints it as one line
            what = "the source failed for good" if isinstance(exc, SourceError) else "the model keeps failing"
            log.error("stopping: %s: %s", what, exc, extra=_fields(error=str(exc)))
            self._stop_reason, exit_code = what, 1
        finally:
            self._stop_requested.set()
            self._shutdown()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        return exit_code

    # -- setup and shutdown --------------------------------------------------------------------------
    def _curve(self):
        if self.config.curve_secret_key is None:
            return None
        return CurveServerConfig(server_secret_key_file=self.config.curve_secret_key,
                                 client_public_keys_dir=self.config.curve_clients_dir)

    def _start_outputs(self) -> None:
        """Bind the sockets and open the JSONL file first: a busy port fails before the model loads."""
        curve = self._curve()
        self.publisher = EventPublisher(PublisherConfig(endpoint=self.config.pub, latest_endpoint=self.config.latest,
                                                        topic=self.config.topic, send_hwm=self.config.send_hwm,
                                                        curve=curve)).start()
        self.control_server = ControlServer(DaemonControl(self), endpoint=self.config.control, curve=curve).start()
        if self.config.jsonl is not None:
            self.jsonl = JsonlSink(self.config.jsonl)

    def _make_pipeline(self) -> Pipeline:
        sinks = [self.publisher] + ([self.jsonl] if self.jsonl is not None else [])
        model = self.model if self.model is not None else self.config.model
        return Pipeline(model, source=self.config.source, queries=self.config.queries,
                        config=self.config.pipeline, sinks=sinks, backend=self.config.backend,
                        device=self.config.device, dtype=self.config.dtype, quantization=self.config.quantization,
                        source_options=self.config.source_options or None)

    def _end_reason(self) -> str:
        cfg = self.config.pipeline
        stats = self.pipeline.stats
        if cfg.max_windows is not None and stats.windows >= cfg.max_windows:
            return "max_windows reached"
        if cfg.max_seconds is not None and stats.uptime_s >= cfg.max_seconds:
            return "max_seconds reached"
        return "the source ended"

    def _shutdown(self) -> None:
        served = self.pipeline is not None  # else setup failed: nothing was published, nothing to report
        if served:
            self.pipeline.close()
        final = self.status() if served else None
        if served and self.publisher is not None and self.config.shutdown_grace_s > 0:
            # LINGER is 0 so that closing never hangs on a dead subscriber; a short pause lets the
            # I/O thread hand the last window's events to the subscribers that are keeping up.
            time.sleep(self.config.shutdown_grace_s)
        for closer in (getattr(self.control_server, "stop", None), getattr(self.publisher, "close", None),
                       getattr(self.jsonl, "close", None)):
            if closer is None:
                continue
            try:
                closer()
            except Exception:  # noqa: BLE001 - shut everything down even if one part fails
                log.exception("error while shutting down")
        if final is not None:
            log.info("stopped", extra=_fields(reason=self._stop_reason, counters=final["counters"]))

    # -- signals and logs ------------------------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            raise KeyboardInterrupt(f"second {name}: aborting without finishing the window")
        # The handler runs in the main thread between two bytecodes, possibly while that thread
        # holds a lock the stop path needs (counters, events): do the work in another thread.
        threading.Thread(target=self._stop_on_signal, args=(name,), name="molmo-edge-signal", daemon=True).start()

    def _stop_on_signal(self, name: str) -> None:
        counters = self.status()["counters"] if self.pipeline is not None else {}
        log.info("%s received: finishing the window in progress, then stopping", name,
                 extra=_fields(signal=name, events_published=counters.get("events_published", 0),
                               windows=counters.get("windows", 0)))
        self.request_stop(f"{name} received")

    def _log_event(self, event: Event) -> None:
        latency = event.latency_ms
        log.info("event", extra=_fields(
            event={"seq": event.seq, "query_index": event.query_index, "window_t0_s": event.window_t0_s,
                   "window_t1_s": event.window_t1_s, "count": event.count, "objects": len(event.objects),
                   "track_ids": sorted({o.track_id for o in event.objects}),
                   "parse_errors": len(event.parse_errors), "total_ms": round(latency.total, 1),
                   "capture_to_publish_ms": round(latency.capture_to_publish or 0.0, 1)}))

    def _log_status_every(self) -> None:
        while not self._stop_requested.wait(self.config.status_interval_s):
            try:
                status = self.status()
            except Exception:  # noqa: BLE001 - a status line is never worth a crash
                log.debug("status snapshot failed", exc_info=True)
                continue
            log.info("status", extra=_fields(status={k: status[k] for k in
                                                     ("state", "uptime_s", "counters", "windows_per_s",
                                                      "last_latency_ms")}))


__all__ = ["Daemon", "DaemonConfig", "DaemonControl", "JsonLogFormatter", "TextLogFormatter", "configure_logging"]
