"""Real media for the stream tests: video files written with OpenCV, an HTTP MJPEG camera."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

W_PX, H_PX = 64, 48


def frame_value(i: int) -> int:
    """Grey level of synthetic frame i: distinct, far apart, survives JPEG."""
    return (i * 37) % 200 + 25


def make_frame(i: int) -> np.ndarray:
    return np.full((H_PX, W_PX, 3), frame_value(i), np.uint8)  # BGR == RGB for grey


def write_mjpg_avi(path: Path, n_frames: int, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W_PX, H_PX))
    assert writer.isOpened(), "this OpenCV cannot write MJPG .avi"
    for i in range(n_frames):
        writer.write(make_frame(i))
    writer.release()
    return path


def damage_frame(path: Path, frame_index: int) -> None:
    """Overwrite the JPEG header of one frame of an MJPG .avi with garbage."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i] == 0xFF and data[i + 1] == 0xD8 and data[i + 2] == 0xFF]
    start = starts[frame_index]
    data[start:start + 200] = b"\x55" * 200
    path.write_bytes(bytes(data))


class MjpegServer:
    """An HTTP multipart/x-mixed-replace MJPEG camera on 127.0.0.1, like an IP camera.

    `drop_after` frames into the first connection it closes the socket (a network failure);
    later connections stream until the server stops.
    """

    def __init__(self, fps: float = 30.0, drop_after: int | None = None) -> None:
        server = self
        self.connections = 0
        self.stopped = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                server.connections += 1
                first = server.connections == 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not server.stopped.is_set():
                        if first and drop_after is not None and i >= drop_after:
                            return  # closes the connection mid-stream
                        ok, jpg = cv2.imencode(".jpg", make_frame(i))
                        body = jpg.tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(body) + body + b"\r\n")
                        i += 1
                        time.sleep(1.0 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()
