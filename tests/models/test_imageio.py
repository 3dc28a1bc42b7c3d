"""The shared image loader: every mode becomes RGB, every bad file a stable error code."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.imageio import ErrorCode, ImageError, decode_image, load_image, read_image_bytes


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 6 % 256, (x + y) * 3 % 256], -1).astype(np.uint8)


def test_decodes_once_to_every_requested_size():
    data = _encode(Image.fromarray(_gradient()), "PNG")
    a, b, c = decode_image(data, [32, (16, 24), (40, 60)])
    assert a.shape == (32, 32, 3) and b.shape == (16, 24, 3) and c.shape == (40, 60, 3)
    assert a.dtype == np.uint8
    np.testing.assert_array_equal(c, _gradient())  # native size is not resampled


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "1"])
def test_every_mode_becomes_rgb(mode: str):
    img = Image.fromarray(_gradient()).convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    (out,) = decode_image(_encode(img, fmt), [(40, 60)])
    assert out.shape == (40, 60, 3)


def test_grayscale_gives_equal_channels():
    img = Image.fromarray(_gradient()[..., 0], mode="L")
    (out,) = decode_image(_encode(img, "PNG"), [(40, 60)])
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], _gradient()[..., 0])


def test_sixteen_bit_keeps_top_byte_instead_of_clipping():
    arr16 = (np.arange(40 * 60).reshape(40, 60) * 27 % 65536).astype(np.uint16)
    (out,) = decode_image(_encode(Image.fromarray(arr16), "PNG"), [(40, 60)])
    np.testing.assert_array_equal(out[..., 0], (arr16 >> 8).astype(np.uint8))


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # white left half, landscape
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    (out,) = decode_image(_encode(img, "PNG", exif=exif), [(40, 20)])
    assert out[:18, :, 0].mean() > 200 and out[22:, :, 0].mean() < 50  # white moved to the top


def test_palette_with_transparency_and_animated_gif_first_frame():
    frames = [Image.new("P", (30, 30), i) for i in (10, 200)]
    for f in frames:
        f.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], transparency=0)
    (out,) = decode_image(buf.getvalue(), [30])
    np.testing.assert_array_equal(out[0, 0], [10, 245, 0])


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"<html><body>not an image</body></html>", ErrorCode.UNSUPPORTED),
        (
            bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
            ErrorCode.UNSUPPORTED,
        ),
        (b"", ErrorCode.EMPTY),
    ],
)
def test_bad_bytes_get_a_stable_code(payload: bytes, code: ErrorCode):
    with pytest.raises(ImageError) as err:
        decode_image(payload, [32])
    assert err.value.code == code


def test_truncated_jpeg_is_a_decode_error():
    data = _encode(Image.fromarray(_gradient(200, 200)), "JPEG", quality=95)
    with pytest.raises(ImageError, match="damaged") as err:
        decode_image(data[: len(data) // 2], [32])
    assert err.value.code == ErrorCode.DECODE_ERROR


def test_header_claiming_huge_image_is_refused_before_decoding():
    data = _encode(Image.new("L", (30000, 30000)), "PNG")  # compresses to a few KB
    with pytest.raises(ImageError, match="pixels") as err:
        decode_image(data, [32])
    assert err.value.code == ErrorCode.TOO_LARGE


def test_file_errors(tmp_path: Path):
    with pytest.raises(ImageError) as err:
        read_image_bytes(str(tmp_path / "missing.jpg"))
    assert err.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(ImageError) as err:
        read_image_bytes(str(tmp_path))
    assert err.value.code == ErrorCode.NOT_A_FILE
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError) as err:
        read_image_bytes(str(tmp_path / "empty.jpg"))
    assert err.value.code == ErrorCode.EMPTY
    (tmp_path / "big.jpg").write_bytes(b"x" * 2048)
    with pytest.raises(ImageError) as err:
        read_image_bytes(str(tmp_path / "big.jpg"), max_bytes=1024)
    assert err.value.code == ErrorCode.TOO_LARGE
    with pytest.raises(ImageError) as err:
        read_image_bytes("   ")
    assert err.value.code == ErrorCode.BAD_PATH


def test_unreadable_file():
    # Root reads any file, so a forked child drops to an unprivileged user first.
    folder = Path(tempfile.mkdtemp(prefix="gs-perm-"))
    try:
        folder.chmod(0o755)
        p = folder / "secret.jpg"
        p.write_bytes(b"data")
        p.chmod(0)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report the code through the pipe, never return into pytest
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                read_image_bytes(str(p))
                os.write(write_fd, b"read")
            except ImageError as exc:
                os.write(write_fd, str(exc.code).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        os.waitpid(pid, 0)
        with os.fdopen(read_fd) as fh:
            assert fh.read() == ErrorCode.PERMISSION_DENIED
    finally:
        shutil.rmtree(folder)


def test_file_uri_and_unicode_path(tmp_path: Path):
    p = tmp_path / "ünï cödé face.png"
    Image.fromarray(_gradient()).save(p)
    np.testing.assert_array_equal(load_image(str(p), (40, 60)), _gradient())
    np.testing.assert_array_equal(load_image(p.as_uri(), (40, 60)), _gradient())
