"""Tests for mmft.data.images: safe, correct image loading for the data collator.

Every image is made in ``tmp_path`` with PIL; nothing touches the network (remote fetching is tested against a
monkeypatched ``urllib.request.urlopen``). Each test is written so that it fails if the behaviour it names breaks.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, JpegImagePlugin

from mmft.data import image_refs
from mmft.data.image_errors import ImageLoadError
from mmft.data.image_geometry import fit_to_pixels
from mmft.data.image_headers import image_size
from mmft.data.images import DEFAULT_MAX_IMAGE_PIXELS, load_image

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
ORIENTATION_TAG = 0x0112


# --------------------------------------------------------------------------------------------------------------------
# Helpers


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _png_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def _red_left_blue_right(width: int = 40, height: int = 20) -> Image.Image:
    img = Image.new("RGB", (width, height), BLUE)
    img.paste(RED, (0, 0, width // 2, height))
    return img


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return exif


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (1-bit grey) but whose pixel data is empty: costs nothing to create,
    and decoding it would fail, so a test passing on it proves only the header was read."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _close(actual, expected, tol: int = 3) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "data"
    r.mkdir()
    return r


@pytest.fixture
def no_decoding(monkeypatch):
    """Make any pixel decoding of a file-backed image fail loudly, and record that it was attempted."""
    calls = []

    def refuse_load(self, *args, **kwargs):
        calls.append(self)
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_load)
    return calls


# --------------------------------------------------------------------------------------------------------------------
# Paths and the image root


def test_relative_path_under_root_loads(root: Path):
    _save(_red_left_blue_right(), root / "imgs" / "a.png")
    img = load_image("imgs/a.png", root=root)
    assert img.mode == "RGB"
    assert img.size == (40, 20)
    assert img.getpixel((0, 0)) == RED
    assert img.getpixel((39, 0)) == BLUE


def test_pathlike_ref_and_str_root(root: Path):
    _save(_red_left_blue_right(), root / "a.png")
    assert load_image(Path("a.png"), root=str(root)).size == (40, 20)


def test_relative_path_defaults_to_cwd(root: Path, monkeypatch):
    _save(_red_left_blue_right(), root / "a.png")
    monkeypatch.chdir(root)
    assert load_image("a.png").size == (40, 20)


def test_absolute_path_refused_unless_allowed(root: Path):
    path = _save(_red_left_blue_right(), root / "a.png")
    # Refused even though the file is inside the root: datasets should not carry absolute paths.
    with pytest.raises(ImageLoadError) as err:
        load_image(str(path), root=root)
    assert "absolute" in str(err.value)
    assert "--allow_images_outside_root" in str(err.value)
    assert load_image(str(path), root=root, allow_outside_root=True).size == (40, 20)


def test_dotdot_escaping_root_refused_unless_allowed(root: Path):
    _save(_red_left_blue_right(), root.parent / "outside.png")
    with pytest.raises(ImageLoadError) as err:
        load_image("../outside.png", root=root)
    assert "outside the image root" in str(err.value)
    assert "--allow_images_outside_root" in str(err.value)
    assert load_image("../outside.png", root=root, allow_outside_root=True).size == (40, 20)


def test_dotdot_staying_inside_root_is_fine(root: Path):
    _save(_red_left_blue_right(), root / "a.png")
    (root / "sub").mkdir()
    assert load_image("sub/../a.png", root=root).size == (40, 20)


def _symlink_or_skip(link: Path, target: Path, target_is_directory: bool = False) -> None:
    """Create a symlink; skip (naming why) only where the filesystem cannot hold one, e.g. Windows without rights."""
    try:
        link.symlink_to(target, target_is_directory=target_is_directory)
    except (OSError, NotImplementedError) as error:
        pytest.skip(f"this filesystem cannot create symlinks ({error}); the path-escape rule needs one to test")


def test_symlink_pointing_outside_root_refused(root: Path):
    target = _save(_red_left_blue_right(), root.parent / "secret.png")
    _symlink_or_skip(root / "innocent.png", target)
    with pytest.raises(ImageLoadError) as err:
        load_image("innocent.png", root=root)
    assert "outside the image root" in str(err.value)
    assert load_image("innocent.png", root=root, allow_outside_root=True).size == (40, 20)


def test_symlink_inside_root_allowed(root: Path):
    target = _save(_red_left_blue_right(), root / "real" / "a.png")
    _symlink_or_skip(root / "alias.png", target)
    assert load_image("alias.png", root=root).size == (40, 20)


def test_root_that_is_a_symlink_is_resolved(tmp_path: Path):
    real = tmp_path / "real_root"
    _save(_red_left_blue_right(), real / "a.png")
    link_root = tmp_path / "link_root"
    _symlink_or_skip(link_root, real, target_is_directory=True)
    assert load_image("a.png", root=link_root).size == (40, 20)


def test_missing_file_message_names_path_root_and_flag(root: Path):
    with pytest.raises(ImageLoadError) as err:
        load_image("imgs/nope.png", root=root, record_id="rec-7")
    msg = str(err.value)
    assert "imgs/nope.png" in msg
    assert str(root.resolve() / "imgs" / "nope.png") in msg
    assert str(root.resolve()) in msg
    assert "--image_root" in msg
    assert "rec-7" in msg


def test_directory_is_not_an_image(root: Path):
    (root / "dir.png").mkdir()
    with pytest.raises(ImageLoadError, match="not a file"):
        load_image("dir.png", root=root)


def test_file_handle_is_closed_and_pixels_loaded(root: Path):
    path = _save(_red_left_blue_right(), root / "a.png")
    img = load_image("a.png", root=root)
    if Path("/proc/self/fd").is_dir():
        open_targets = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                open_targets.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        assert str(path.resolve()) not in open_targets
    path.unlink()  # a lazily-loaded image would now fail to read its pixels
    assert img.getpixel((0, 0)) == RED
    assert len(img.tobytes()) == 40 * 20 * 3


# --------------------------------------------------------------------------------------------------------------------
# Other ref kinds


def test_bytes_ref(root: Path):
    data = _png_bytes(_red_left_blue_right())
    for ref in (data, bytearray(data), memoryview(data)):
        img = load_image(ref, root=root)
        assert img.mode == "RGB" and img.size == (40, 20) and img.getpixel((0, 0)) == RED


def test_bytes_ref_ignores_root_rules(tmp_path: Path):
    # No root exists at all: bytes are not paths, so no root check applies.
    img = load_image(_png_bytes(_red_left_blue_right()), root=tmp_path / "does-not-exist")
    assert img.size == (40, 20)


def test_pil_ref_not_mutated_and_new_object_returned():
    ref = Image.new("P", (4, 2))
    ref.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    ref.putpixel((0, 0), 1)
    before = (ref.mode, ref.size, ref.tobytes(), dict(ref.info))
    out = load_image(ref)
    assert out is not ref
    assert out.mode == "RGB" and out.getpixel((0, 0)) == RED and out.getpixel((1, 0)) == (0, 0, 0)
    assert (ref.mode, ref.size, ref.tobytes(), dict(ref.info)) == before


def test_rgb_pil_ref_is_copied():
    ref = Image.new("RGB", (4, 4), RED)
    out = load_image(ref)
    assert out is not ref
    out.putpixel((0, 0), BLUE)
    assert ref.getpixel((0, 0)) == RED


def test_pil_ref_with_exif_and_max_pixels_not_mutated(root: Path):
    _save(_red_left_blue_right(400, 200), root / "a.jpg", quality=95, exif=_exif(6))
    with Image.open(root / "a.jpg") as ref:  # lazily opened, like a PIL image handed over before load()
        out = load_image(ref, max_pixels=50 * 100)
        assert ref.size == (400, 200)  # draft() must not have shrunk the caller's image
        assert ref.getexif()[ORIENTATION_TAG] == 6
    assert out.size == (50, 100)


def test_dict_ref_prefers_bytes_over_path(root: Path):
    _save(Image.new("RGB", (8, 8), BLUE), root / "a.png")
    ref = {"bytes": _png_bytes(Image.new("RGB", (5, 3), RED)), "path": "a.png"}
    img = load_image(ref, root=root)
    assert img.size == (5, 3) and img.getpixel((0, 0)) == RED


def test_dict_ref_bytes_with_unusable_path(root: Path):
    # datasets often keeps the original (absolute, long gone) file name next to the bytes: not a problem.
    ref = {"bytes": _png_bytes(Image.new("RGB", (5, 3), RED)), "path": "/gone/elsewhere.png"}
    assert load_image(ref, root=root).size == (5, 3)


def test_dict_ref_path_uses_root_rules(root: Path):
    _save(_red_left_blue_right(), root / "imgs" / "a.png")
    assert load_image({"bytes": None, "path": "imgs/a.png"}, root=root).size == (40, 20)
    _save(_red_left_blue_right(), root.parent / "outside.png")
    with pytest.raises(ImageLoadError, match="outside the image root"):
        load_image({"bytes": None, "path": "../outside.png"}, root=root)
    with pytest.raises(ImageLoadError, match="absolute"):
        load_image({"bytes": None, "path": str(root / "imgs" / "a.png")}, root=root)


def test_dict_ref_empty(root: Path):
    with pytest.raises(ImageLoadError, match="neither 'bytes' nor 'path'"):
        load_image({"bytes": None, "path": None}, root=root, record_id="r1")


def test_unsupported_ref_type():
    with pytest.raises(ImageLoadError, match="unsupported image reference of type int"):
        load_image(42)


def test_invalid_limits_rejected():
    img = Image.new("RGB", (2, 2))
    for kwargs in ({"max_pixels": 0}, {"max_pixels": -5}, {"max_image_pixels": 0}, {"max_pixels": 1.5}):
        with pytest.raises(ValueError, match="positive int"):
            load_image(img, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Remote URLs


def _forbid_network(monkeypatch):
    def urlopen(*args, **kwargs):
        raise AssertionError("network was accessed")

    monkeypatch.setattr(image_refs.urllib.request, "urlopen", urlopen)


class _FakeResponse:
    def __init__(self, body: bytes, headers: dict | None = None) -> None:
        self._body = body
        self.headers = headers or {}

    def read(self, n: int = -1) -> bytes:
        return self._body if n < 0 else self._body[:n]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_remote_url_refused_by_default(monkeypatch):
    _forbid_network(monkeypatch)
    for url in ("http://example.com/a.png", "HTTPS://example.com/a.png"):
        with pytest.raises(ImageLoadError) as err:
            load_image(url, record_id="web-1")
        assert "refused remote" in str(err.value) and "allow_remote=True" in str(err.value)
        assert "web-1" in str(err.value)


def test_remote_url_fetched_when_allowed(monkeypatch):
    body = _png_bytes(_red_left_blue_right())
    seen = {}

    def urlopen(request, timeout=None):
        seen["url"], seen["timeout"] = request.full_url, timeout
        return _FakeResponse(body, {"Content-Length": str(len(body))})

    monkeypatch.setattr(image_refs.urllib.request, "urlopen", urlopen)
    img = load_image("https://example.com/a.png", allow_remote=True)
    assert img.size == (40, 20) and img.getpixel((0, 0)) == RED
    assert seen == {"url": "https://example.com/a.png", "timeout": 30}


def test_remote_size_cap(monkeypatch):
    monkeypatch.setattr(image_refs, "MAX_REMOTE_BYTES", 100)
    big = b"\x00" * 500
    monkeypatch.setattr(image_refs.urllib.request, "urlopen", lambda req, timeout=None: _FakeResponse(big))
    with pytest.raises(ImageLoadError, match="over the 100-byte cap"):
        load_image("https://example.com/big.png", allow_remote=True)
    # A server announcing a huge body is refused before reading it.
    monkeypatch.setattr(
        image_refs.urllib.request,
        "urlopen",
        lambda req, timeout=None: _FakeResponse(b"", {"Content-Length": "10000000000"}),
    )
    with pytest.raises(ImageLoadError, match="10000000000 bytes"):
        load_image("https://example.com/big.png", allow_remote=True)


def test_remote_fetch_failure_redacts_credentials_and_query(monkeypatch):
    def urlopen(request, timeout=None):
        raise TimeoutError("timed out")

    monkeypatch.setattr(image_refs.urllib.request, "urlopen", urlopen)
    with pytest.raises(ImageLoadError) as err:
        load_image("https://user:hunter2@example.com/a.png?sig=SECRET", allow_remote=True, record_id="r9")
    msg = str(err.value)
    assert "example.com/a.png" in msg and "TimeoutError" in msg and "r9" in msg
    assert "hunter2" not in msg and "SECRET" not in msg


def test_other_url_schemes_refused(monkeypatch):
    _forbid_network(monkeypatch)
    with pytest.raises(ImageLoadError, match="unsupported URL scheme 'file'"):
        load_image("file:///etc/passwd", allow_remote=True)


# --------------------------------------------------------------------------------------------------------------------
# EXIF orientation


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_6_rotates(root: Path, fmt: str):
    # Stored 40x20 with red on the left; orientation 6 means "rotate 90 degrees clockwise to display", which moves
    # the left half to the top.
    name = f"rot.{fmt.lower()}"
    _save(
        _red_left_blue_right(40, 20),
        root / name,
        format=fmt,
        exif=_exif(6),
        **({"quality": 95} if fmt == "JPEG" else {}),
    )
    img = load_image(name, root=root)
    assert img.size == (20, 40)
    assert _close(img.getpixel((10, 5)), RED, tol=40)
    assert _close(img.getpixel((10, 34)), BLUE, tol=40)
    assert image_size(name, root=root) == (20, 40)


def test_exif_orientation_3_rotates_180_without_swap(root: Path):
    _save(_red_left_blue_right(40, 20), root / "r.png", exif=_exif(3))
    img = load_image("r.png", root=root)
    assert img.size == (40, 20)
    assert img.getpixel((0, 0)) == BLUE and img.getpixel((39, 0)) == RED
    assert image_size("r.png", root=root) == (40, 20)


def test_exif_orientation_tag_removed_from_result(root: Path):
    _save(_red_left_blue_right(40, 20), root / "r.png", exif=_exif(6))
    img = load_image("r.png", root=root)
    # If the tag survived, anything that re-applies EXIF orientation would rotate the image a second time.
    assert img.getexif().get(ORIENTATION_TAG, 1) == 1


# --------------------------------------------------------------------------------------------------------------------
# Mode conversion


def test_palette_with_transparency_composites_to_white(root: Path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))  # index 0 black (but transparent), 1 red
    img.putpixel((1, 1), 1)
    _save(img, root / "p.png", transparency=0)
    out = load_image("p.png", root=root)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == WHITE  # transparent -> white, not the palette's black
    assert out.getpixel((1, 1)) == RED


def test_palette_without_transparency(root: Path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 255, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.putpixel((1, 1), 1)
    _save(img, root / "p.png")
    out = load_image("p.png", root=root)
    assert out.getpixel((0, 0)) == (0, 255, 0) and out.getpixel((1, 1)) == RED


def test_palette_gif_with_transparency(root: Path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.putpixel((2, 2), 1)
    _save(img, root / "t.gif", transparency=0)
    out = load_image("t.gif", root=root)
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((2, 2)) == BLUE


def test_la_composites_to_white(root: Path):
    img = Image.new("LA", (3, 1))
    img.putpixel((0, 0), (0, 0))  # fully transparent black
    img.putpixel((1, 0), (100, 255))  # opaque grey
    img.putpixel((2, 0), (0, 128))  # half-transparent black over white -> mid grey
    _save(img, root / "la.png")
    out = load_image("la.png", root=root)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((1, 0)) == (100, 100, 100)
    assert _close(out.getpixel((2, 0)), (127, 127, 127), tol=1)


def test_rgba_composites_to_white(root: Path):
    img = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (255, 0, 0, 255))
    _save(img, root / "rgba.png")
    out = load_image("rgba.png", root=root)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((1, 0)) == RED


def test_rgb_with_transparent_colour_composites_to_white(root: Path):
    img = Image.new("RGB", (2, 1), (0, 0, 0))
    img.putpixel((1, 0), RED)
    _save(img, root / "trns.png", transparency=(0, 0, 0))
    out = load_image("trns.png", root=root)
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((1, 0)) == RED


def test_premultiplied_modes():
    out = load_image(Image.new("RGBa", (1, 1), (0, 0, 0, 0)))
    assert out.getpixel((0, 0)) == WHITE
    out = load_image(Image.new("La", (1, 1), (0, 0)))
    assert out.getpixel((0, 0)) == WHITE


def test_cmyk(root: Path):
    _save(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), root / "cmyk.jpg", quality=95)
    out = load_image("cmyk.jpg", root=root)
    assert out.mode == "RGB" and _close(out.getpixel((4, 4)), WHITE)
    out = load_image(Image.new("CMYK", (2, 2), (255, 0, 0, 0)))  # pure cyan ink
    assert out.getpixel((0, 0)) == (0, 255, 255)


@pytest.mark.parametrize("mode", ["1", "L", "YCbCr", "HSV"])
def test_other_modes_become_rgb(mode: str):
    img = Image.new("RGB", (4, 4), (200, 100, 50)).convert(mode)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (4, 4)
    assert _close(out.getpixel((0, 0)), img.convert("RGB").getpixel((0, 0)), tol=0)


def test_16bit_grayscale_png_scaled_not_clipped(root: Path):
    img = Image.new("I;16", (3, 1))
    for x, value in enumerate((32896, 65535, 1000)):
        img.putpixel((x, 0), value)
    _save(img, root / "g16.png")
    assert Image.open(root / "g16.png").mode.startswith("I")  # really stored as 16-bit
    out = load_image("g16.png", root=root)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (128, 128, 128)  # 32896 / 257; clipping would give 255
    assert out.getpixel((1, 0)) == WHITE
    assert out.getpixel((2, 0)) == (4, 4, 4)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16bit_modes(mode: str):
    img = Image.new(mode, (2, 1))
    img.putpixel((0, 0), 32896)
    img.putpixel((1, 0), 0)
    out = load_image(img)
    assert out.getpixel((0, 0)) == (128, 128, 128)
    assert out.getpixel((1, 0)) == (0, 0, 0)


def test_int32_outside_16bit_range_uses_min_max():
    img = Image.new("I", (2, 1))
    img.putpixel((0, 0), -100_000)
    img.putpixel((1, 0), 100_000)
    out = load_image(img)
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == WHITE


def test_float_scaled_by_min_max():
    img = Image.fromarray(np.array([[2.0, 3.0, 4.0]], dtype=np.float32))
    assert img.mode == "F"
    out = load_image(img)
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    flat = load_image(Image.new("F", (2, 2), 7.0))  # no contrast: must not divide by zero
    assert flat.getpixel((0, 0)) == (0, 0, 0)


# --------------------------------------------------------------------------------------------------------------------
# Downscaling


@pytest.mark.parametrize(
    ("size", "max_pixels"),
    [
        ((400, 200), 20_000),
        ((1000, 10), 1_000),
        ((333, 777), 12_345),
        ((10_000, 1), 10),
        ((1, 5000), 7),
        ((64, 64), 1),
    ],
)
def test_max_pixels_respects_cap_and_aspect(size, max_pixels):
    out = load_image(Image.new("RGB", size, RED), max_pixels=max_pixels)
    w, h = out.size
    assert w * h <= max_pixels
    assert w >= 1 and h >= 1
    assert w <= size[0] and h <= size[1]
    if min(w, h) > 1:  # aspect ratio kept within one pixel of rounding on each side
        assert abs(w / h - size[0] / size[1]) <= (size[0] / size[1]) * (1 / min(w, h) + 1e-9) * 2
    # and it uses the budget rather than shrinking needlessly
    assert (w + 1) * (h + 1) > max_pixels


def test_max_pixels_exact_example():
    assert load_image(Image.new("RGB", (400, 200)), max_pixels=20_000).size == (200, 100)


def test_max_pixels_never_upscales():
    assert load_image(Image.new("RGB", (10, 20)), max_pixels=1_000_000).size == (10, 20)
    assert load_image(Image.new("RGB", (10, 20)), max_pixels=200).size == (10, 20)


def test_jpeg_max_pixels_uses_draft(root: Path, monkeypatch):
    _save(_red_left_blue_right(1600, 1200), root / "big.jpg", quality=90)
    calls = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        calls.append((mode, size, self.size))
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = load_image("big.jpg", root=root, max_pixels=100 * 75)
    assert calls == [("RGB", (100, 75), (1600, 1200))]
    assert out.size == (100, 75)
    assert _close(out.getpixel((5, 37)), RED, tol=30) and _close(out.getpixel((94, 37)), BLUE, tol=30)


def test_jpeg_draft_with_exif_rotation_keeps_cap_and_aspect(root: Path):
    _save(_red_left_blue_right(1600, 800), root / "rot.jpg", quality=90, exif=_exif(6))
    out = load_image("rot.jpg", root=root, max_pixels=5_000)
    assert out.size == (50, 100)  # rotated: portrait
    assert _close(out.getpixel((25, 5)), RED, tol=30) and _close(out.getpixel((25, 94)), BLUE, tol=30)


def test_jpeg_without_max_pixels_is_full_size(root: Path):
    _save(_red_left_blue_right(160, 120), root / "a.jpg", quality=90)
    assert load_image("a.jpg", root=root).size == (160, 120)


# --------------------------------------------------------------------------------------------------------------------
# Decompression bombs


def test_default_cap_value():
    assert DEFAULT_MAX_IMAGE_PIXELS == 64_000_000
    assert DEFAULT_MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS  # our clearer error fires before PIL's warning


def test_bomb_refused_before_decoding(root: Path, no_decoding):
    _save(Image.new("RGB", (100, 100)), root / "a.png")
    with pytest.raises(ImageLoadError) as err:
        load_image("a.png", root=root, max_image_pixels=5_000, record_id="bomb-1")
    msg = str(err.value)
    assert "10,000 pixels" in msg and "5,000" in msg
    assert "raise max_image_pixels" in msg
    assert "bomb-1" in msg and "a.png" in msg
    assert no_decoding == []


def test_bomb_header_over_default_cap(root: Path, no_decoding):
    # 9000x9000 = 81 MP: over our 64 MP cap, under PIL's own ~89.5 MP warning threshold.
    (root / "bomb.png").write_bytes(_png_header_only(9000, 9000))
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray PIL warning either
        with pytest.raises(ImageLoadError, match="81,000,000 pixels"):
            load_image("bomb.png", root=root)
    assert no_decoding == []
    assert Image.MAX_IMAGE_PIXELS == before  # the process-wide PIL setting is untouched


def test_huge_bomb_caught_from_pil_error(root: Path, no_decoding):
    # 900 MP: PIL itself raises DecompressionBombError while opening; it must surface as ImageLoadError.
    (root / "huge.png").write_bytes(_png_header_only(30_000, 30_000))
    with pytest.raises(ImageLoadError) as err:
        load_image("huge.png", root=root, record_id="h")
    msg = str(err.value)
    assert "decompression bomb" in msg and "900000000" in msg and "max_image_pixels" in msg and "'h'" in msg
    assert no_decoding == []


def test_bomb_from_bytes_and_pil_ref(no_decoding):
    with pytest.raises(ImageLoadError, match="81,000,000 pixels"):
        load_image(_png_header_only(9000, 9000))
    with pytest.raises(ImageLoadError, match="10,000 pixels"):
        load_image(Image.new("RGB", (100, 100)), max_image_pixels=5_000)


def test_cap_disabled_reaches_decoding_without_warning(root: Path, no_decoding):
    # 100 MP: over PIL's warning threshold, under its error threshold. With max_image_pixels=None the caller has
    # allowed it, so decoding is attempted (and fails here only because our fixture refuses it), with no warning.
    (root / "big.png").write_bytes(_png_header_only(10_000, 10_000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageLoadError, match="corrupt or truncated"):
            load_image("big.png", root=root, max_image_pixels=None)
    assert len(no_decoding) == 1
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_pil_limit_is_respected_and_restored(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    # Our cap disabled: PIL's warning (1,000 < 1,600 <= 2,000) is silenced and the image loads.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(_png_bytes(Image.new("RGB", (40, 40))), max_image_pixels=None).size == (40, 40)
    # Over twice PIL's limit, PIL raises; the message explains the second, process-wide limit.
    with pytest.raises(ImageLoadError, match=r"PIL\.Image\.MAX_IMAGE_PIXELS"):
        load_image(_png_bytes(Image.new("RGB", (50, 50))), max_image_pixels=None)
    assert Image.MAX_IMAGE_PIXELS == 1_000


# --------------------------------------------------------------------------------------------------------------------
# Corrupt files and error messages


def test_truncated_png(root: Path):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = _png_bytes(noise)
    (root / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError) as err:
        load_image("cut.png", root=root, record_id="rec-cut")
    msg = str(err.value)
    assert "corrupt or truncated" in msg and "cut.png" in msg and "rec-cut" in msg


def test_truncated_jpeg(root: Path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "cut.jpg").write_bytes(buf.getvalue()[:600])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image("cut.jpg", root=root)


def test_not_an_image_never_echoes_contents(root: Path):
    secret = b"API_KEY=sk-SECRET-123\n" * 10
    (root / "fake.png").write_bytes(secret)
    for ref in ("fake.png", secret, {"bytes": secret, "path": "fake.png"}):
        with pytest.raises(ImageLoadError) as err:
            load_image(ref, root=root, record_id="r2")
        msg = str(err.value)
        assert "not a recognised image file" in msg and "r2" in msg
        assert "SECRET" not in msg and "API_KEY" not in msg


def test_bytes_error_describes_length_not_contents():
    data = _png_bytes(Image.new("RGB", (4, 4)))
    with pytest.raises(ImageLoadError) as err:
        load_image(data[:40])
    assert "<image bytes, 40 bytes>" in str(err.value)
    assert "IHDR" not in str(err.value)


def test_truncated_lazy_pil_ref(root: Path):
    data = _png_bytes(Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    lazy = Image.open(io.BytesIO(data[: len(data) // 2]))
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_image(lazy, record_id="x")


@pytest.mark.parametrize(
    "call",
    [
        lambda r: load_image("missing.png", root=r, record_id="ID-42"),
        lambda r: load_image("../x.png", root=r, record_id="ID-42"),
        lambda r: load_image("/etc/hosts", root=r, record_id="ID-42"),
        lambda r: load_image(b"junk", root=r, record_id="ID-42"),
        lambda r: load_image("https://example.com/a.png", root=r, record_id="ID-42"),
        lambda r: load_image(Image.new("RGB", (9, 9)), max_image_pixels=10, record_id="ID-42"),
        lambda r: load_image({"bytes": None, "path": None}, record_id="ID-42"),
    ],
    ids=["missing", "escape", "absolute", "junk", "remote", "bomb", "empty-dict"],
)
def test_record_id_in_every_error(root: Path, call):
    with pytest.raises(ImageLoadError) as err:
        call(root)
    assert "record 'ID-42'" in str(err.value)


def test_image_load_error_is_value_error():
    assert issubclass(ImageLoadError, ValueError)


# --------------------------------------------------------------------------------------------------------------------
# image_size


def test_image_size_reads_header_only(root: Path, no_decoding):
    _save(Image.new("RGB", (40, 20)), root / "a.png")
    _save(_red_left_blue_right(40, 20), root / "rot.png", exif=_exif(6))
    _save(_red_left_blue_right(40, 20), root / "rot.jpg", exif=_exif(8))
    (root / "big.png").write_bytes(_png_header_only(10_000, 10_000))  # could not be decoded at all
    assert image_size("a.png", root=root) == (40, 20)
    assert image_size("rot.png", root=root) == (20, 40)
    assert image_size("rot.jpg", root=root) == (20, 40)
    assert image_size("big.png", root=root) == (10_000, 10_000)
    assert no_decoding == []


def test_image_size_other_refs(root: Path):
    data = _png_bytes(Image.new("RGB", (7, 3)), exif=_exif(6))
    assert image_size(data) == (3, 7)
    assert image_size({"bytes": data, "path": None}) == (3, 7)
    _save(Image.new("RGB", (7, 3)), root / "a.png")
    assert image_size({"bytes": None, "path": "a.png"}, root=root) == (7, 3)
    assert image_size(Image.new("RGB", (7, 3))) == (7, 3)


def test_image_size_applies_root_rules_and_never_fetches(root: Path, monkeypatch):
    _forbid_network(monkeypatch)
    _save(Image.new("RGB", (7, 3)), root.parent / "outside.png")
    with pytest.raises(ImageLoadError, match="outside the image root"):
        image_size("../outside.png", root=root)
    assert image_size("../outside.png", root=root, allow_outside_root=True) == (7, 3)
    with pytest.raises(ImageLoadError, match="refused remote"):
        image_size("https://example.com/a.png")
    with pytest.raises(ImageLoadError, match="not a recognised image file"):
        image_size(b"not an image")


def test_image_size_matches_load_image(root: Path):
    for orientation in range(1, 9):
        name = f"o{orientation}.jpg"
        _save(_red_left_blue_right(30, 10), root / name, exif=_exif(orientation))
        assert image_size(name, root=root) == load_image(name, root=root).size


@pytest.mark.parametrize("size", [(640, 480), (1000, 7), (333, 999), (2, 5000), (1, 1)])
@pytest.mark.parametrize("pixels", [1, 50, 1234.5, 30_000, 10**9])
def test_fit_to_pixels_rounds_down_under_a_cap_and_up_over_a_floor(size, pixels):
    width, height = size
    down = fit_to_pixels(width, height, pixels)
    up = fit_to_pixels(width, height, pixels, rounding="up")
    for w, h in (down, up):  # never larger than the input, sides >= 1
        assert 1 <= w <= width and 1 <= h <= height
    if width * height <= pixels:
        assert down == up == size
        return
    assert down[0] * down[1] <= max(pixels, 1)  # a cap is kept (1 px is the least an image can have)
    assert up[0] * up[1] >= pixels  # a floor is kept
    assert down[0] <= up[0] and down[1] <= up[1]
    with pytest.raises(ValueError, match="rounding"):
        fit_to_pixels(width, height, pixels, rounding="nearest")
