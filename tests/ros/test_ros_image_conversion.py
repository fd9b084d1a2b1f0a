"""sensor_msgs/Image and CompressedImage ↔ numpy, on real message types (serialised through CDR)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from molmo_edge.errors import MolmoEdgeError  # noqa: E402
from molmo_edge.ros.headers import make_header  # noqa: E402
from molmo_edge.ros.image_conversion import (  # noqa: E402
    ENCODINGS,
    ImageConversionError,
    ImageDataSizeError,
    ImageDecodeError,
    UnsupportedEncodingError,
    compressed_to_rgb,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
    rgb_to_compressed,
)

pytestmark = pytest.mark.ros


def _over_the_wire(msg):
    """What a subscriber gets: the message serialised to CDR and back."""
    return deserialize_message(serialize_message(msg), type(msg))


def _random_image(rng: np.random.Generator, encoding: str, height: int, width: int) -> np.ndarray:
    info = ENCODINGS[encoding]
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype == np.float32:
        return rng.uniform(-1e3, 1e3, shape).astype(np.float32)
    return rng.integers(0, np.iinfo(info.dtype).max, shape, endpoint=True).astype(info.dtype)


@settings(max_examples=60, deadline=None)
@given(encoding=st.sampled_from(sorted(ENCODINGS)), height=st.integers(1, 17), width=st.integers(1, 23),
       seed=st.integers(0, 2**32 - 1))
def test_every_encoding_round_trips(encoding, height, width, seed):
    array = _random_image(np.random.default_rng(seed), encoding, height, width)
    msg = _over_the_wire(numpy_to_image(array, encoding, make_header(123_456_789_012, "cam")))
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (height, width, encoding, 0)
    assert msg.header.stamp.sec == 123 and msg.header.stamp.nanosec == 456_789_012
    back = image_to_numpy(msg)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pad_bytes", [1, 3, 64])
def test_padded_rows_are_skipped(encoding, pad_bytes):
    array = _random_image(np.random.default_rng(1), encoding, 5, 7)
    row_bytes = array[0].nbytes
    rows = np.full((5, row_bytes + pad_bytes), 0xAB, np.uint8)  # padding filled with junk
    rows[:, :row_bytes] = np.frombuffer(array.tobytes(), np.uint8).reshape(5, row_bytes)
    msg = Image(height=5, width=7, encoding=encoding, is_bigendian=0, step=row_bytes + pad_bytes,
                data=rows.tobytes())
    np.testing.assert_array_equal(image_to_numpy(_over_the_wire(msg)), array)


@pytest.mark.parametrize("encoding, big_endian_dtype", [("16UC1", ">u2"), ("mono16", ">u2"), ("32FC1", ">f4")])
def test_big_endian_samples(encoding, big_endian_dtype):
    array = _random_image(np.random.default_rng(2), encoding, 4, 6)
    data = array.astype(big_endian_dtype).tobytes()
    assert data != array.tobytes()  # the byte order really differs on this machine
    msg = Image(height=4, width=6, encoding=encoding, is_bigendian=1, step=6 * array.itemsize, data=data)
    back = image_to_numpy(_over_the_wire(msg))
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_colour_encodings_become_rgb():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (6, 8, 3), endpoint=True).astype(np.uint8)
    alpha = rng.integers(0, 255, (6, 8, 1), endpoint=True).astype(np.uint8)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
    }
    for encoding, pixels in cases.items():
        got = image_to_rgb(numpy_to_image(np.ascontiguousarray(pixels), encoding))
        np.testing.assert_array_equal(got, rgb, err_msg=encoding)
    grey = rgb[:, :, 0].copy()
    np.testing.assert_array_equal(image_to_rgb(numpy_to_image(grey, "mono8")), np.repeat(grey[:, :, None], 3, 2))
    with pytest.raises(UnsupportedEncodingError, match="depth"):
        image_to_rgb(numpy_to_image(np.zeros((2, 2), np.uint16), "16UC1"))


def test_compressed_png_is_exact_and_jpeg_is_close():
    # a smooth image, so JPEG's error is small and bounded
    v, u = np.mgrid[0:48, 0:64]
    rgb = np.stack([u * 4, v * 5, (u + v) * 2], axis=2).astype(np.uint8)
    png = _over_the_wire(rgb_to_compressed(rgb, "png", make_header(5, "cam")))
    assert png.format == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(compressed_to_rgb(png), rgb)
    jpeg = _over_the_wire(rgb_to_compressed(rgb, "jpeg", jpeg_quality=95))
    decoded = compressed_to_rgb(jpeg)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).mean() < 3.0
    # a grey PNG from another encoder also comes back as three identical channels
    ok, grey_png = cv2.imencode(".png", rgb[:, :, 0])
    grey = compressed_to_rgb(CompressedImage(format="png", data=grey_png.tobytes()))
    np.testing.assert_array_equal(grey, np.repeat(rgb[:, :, :1], 3, axis=2))


@pytest.mark.parametrize("msg, error, match", [
    (Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)), UnsupportedEncodingError, "yuv422"),
    (Image(height=2, width=2, encoding="", step=6, data=bytes(12)), UnsupportedEncodingError, "not supported"),
    (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(11)), ImageDataSizeError, "needs 12 bytes"),
    (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(13)), ImageDataSizeError, "has 13"),
    (Image(height=2, width=2, encoding="16UC1", step=3, data=bytes(6)), ImageDataSizeError, "step 3"),
    (Image(height=0, width=2, encoding="mono8", step=2, data=b""), ImageDataSizeError, "nothing to read"),
])
def test_bad_images_raise_typed_errors(msg, error, match):
    with pytest.raises(error, match=match) as info:
        image_to_numpy(msg)
    assert isinstance(info.value, ImageConversionError) and isinstance(info.value, MolmoEdgeError)


@pytest.mark.parametrize("msg, error", [
    (CompressedImage(format="jpeg", data=b"\xff\xd8 this is not a jpeg"), ImageDecodeError),
    (CompressedImage(format="png", data=b""), ImageDecodeError),
    (CompressedImage(format="16UC1; compressedDepth png", data=b"\x00" * 20), UnsupportedEncodingError),
    (CompressedImage(format="h264", data=b"\x00" * 20), UnsupportedEncodingError),
])
def test_bad_compressed_images_raise_typed_errors(msg, error):
    with pytest.raises(error):
        compressed_to_rgb(msg)


def test_wrong_arrays_are_refused_when_building_messages():
    with pytest.raises(ImageConversionError, match="dtype uint8"):
        numpy_to_image(np.zeros((2, 2, 3), np.float32), "rgb8")
    with pytest.raises(ImageConversionError, match="shape"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "bgr8")
