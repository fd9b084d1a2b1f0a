"""sensor_msgs/Image and CompressedImage ↔ numpy, without cv_bridge (not available as a wheel).

Layout of a sensor_msgs/Image: `height` rows of `step` bytes each; a row holds `width` pixels of
`channels × itemsize` bytes, then possibly padding up to `step`. Multi-byte samples are big-endian
when `is_bigendian` is set. Conversions here honour both and always return native-endian arrays.

Every failure raises an `ImageConversionError` subclass, so a node can count and log bad frames
and keep serving.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from molmo_edge.errors import MolmoEdgeError


class ImageConversionError(MolmoEdgeError, ValueError):
    """A ROS image message that cannot be turned into pixels."""


class UnsupportedEncodingError(ImageConversionError):
    """The message's encoding (or compressed format) is not one this package reads."""


class ImageDataSizeError(ImageConversionError):
    """The message's data length does not match its height, width, step and encoding."""


class ImageDecodeError(ImageConversionError):
    """A CompressedImage whose bytes are not a decodable JPEG/PNG."""


@dataclass(frozen=True)
class EncodingInfo:
    dtype: np.dtype   # one sample, native byte order
    channels: int


ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(np.dtype(np.uint8), 3),
    "bgr8": EncodingInfo(np.dtype(np.uint8), 3),
    "rgba8": EncodingInfo(np.dtype(np.uint8), 4),
    "bgra8": EncodingInfo(np.dtype(np.uint8), 4),
    "mono8": EncodingInfo(np.dtype(np.uint8), 1),
    "mono16": EncodingInfo(np.dtype(np.uint16), 1),
    "16UC1": EncodingInfo(np.dtype(np.uint16), 1),
    "32FC1": EncodingInfo(np.dtype(np.float32), 1),
}

# How each colour encoding becomes RGB (the model's input); depth encodings have no colour.
_TO_RGB = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
}


def encoding_info(encoding: str) -> EncodingInfo:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise UnsupportedEncodingError(
            f"image encoding {encoding!r} is not supported; use one of {', '.join(ENCODINGS)}"
        ) from None


def image_to_numpy(msg: Image) -> np.ndarray:
    """sensor_msgs/Image → array [H, W] (one channel) or [H, W, C], native dtype, channels as sent."""
    info = encoding_info(msg.encoding)
    height, width = int(msg.height), int(msg.width)
    if height <= 0 or width <= 0:
        raise ImageDataSizeError(f"image is {width}x{height}: nothing to read")
    row_bytes = width * info.channels * info.dtype.itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise ImageDataSizeError(
            f"step {step} is shorter than one row of {width} {msg.encoding} pixels ({row_bytes} bytes)"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)  # works on bytes and on rclpy's array('B')
    if data.size != step * height:
        raise ImageDataSizeError(
            f"{msg.encoding} image {width}x{height} with step {step} needs {step * height} bytes, "
            f"the message has {data.size}"
        )
    # Drop the per-row padding; the copy also keeps the result from aliasing the message buffer.
    rows = data.reshape(height, step)[:, :row_bytes].copy()  # [H, row_bytes] uint8
    sample = info.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = rows.view(sample).astype(info.dtype, copy=False)  # [H, W·C], native byte order
    return pixels.reshape((height, width) if info.channels == 1 else (height, width, info.channels))


def image_to_rgb(msg: Image) -> np.ndarray:
    """A colour or mono8 sensor_msgs/Image → RGB uint8 [H, W, 3] (what the model takes)."""
    if msg.encoding not in _TO_RGB:
        kind = "a depth/16-bit image" if msg.encoding in ENCODINGS else "not supported"
        raise UnsupportedEncodingError(
            f"image encoding {msg.encoding!r} is {kind}; the model needs one of {', '.join(_TO_RGB)}"
        )
    pixels = image_to_numpy(msg)
    code = _TO_RGB[msg.encoding]
    return pixels if code is None else cv2.cvtColor(pixels, code)


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Array [H, W] or [H, W, C] → sensor_msgs/Image (little-endian, rows unpadded)."""
    info = encoding_info(encoding)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1 and info.channels == 1:
        array = array[:, :, 0]
    want_ndim = 2 if info.channels == 1 else 3
    if array.ndim != want_ndim or (want_ndim == 3 and array.shape[2] != info.channels):
        raise ImageConversionError(
            f"{encoding} needs an array of shape [H, W{'' if info.channels == 1 else f', {info.channels}'}], "
            f"got {array.shape}"
        )
    if array.dtype != info.dtype:
        raise ImageConversionError(f"{encoding} needs dtype {info.dtype}, got {array.dtype}")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * info.channels * info.dtype.itemsize
    msg.data = np.ascontiguousarray(array, dtype=info.dtype.newbyteorder("<")).tobytes()
    return msg


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG) → RGB uint8 [H, W, 3]."""
    fmt = msg.format.lower()
    if "compresseddepth" in fmt:
        raise UnsupportedEncodingError(
            f"compressed format {msg.format!r} is a compressedDepth image; subscribe to the raw depth topic"
        )
    if fmt and not any(name in fmt for name in ("jpeg", "jpg", "png")):
        raise UnsupportedEncodingError(f"compressed format {msg.format!r} is not JPEG or PNG")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageDecodeError("compressed image has no data")
    # IMREAD_COLOR gives 3-channel BGR for colour and grey sources alike.
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(f"{data.size} bytes of {msg.format or 'compressed image'} could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header: Header | None = None,
                      jpeg_quality: int = 90) -> CompressedImage:
    """RGB uint8 [H, W, 3] → sensor_msgs/CompressedImage (`format` as image_transport writes it)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageConversionError(f"expected RGB uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    if fmt not in ("jpeg", "png"):
        raise UnsupportedEncodingError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode the image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"rgb8; {fmt} compressed bgr8"
    msg.data = encoded.tobytes()
    return msg
