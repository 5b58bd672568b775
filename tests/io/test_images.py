"""Micrograph images: exact values, no flips, colour handling, pixel size, PNG writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cryoset.errors import InputError
from cryoset.io import mrc as mrc_module
from cryoset.io.images import read_image, scale_to_uint8, write_png
from cryoset.io.mrc import read_stack, write_map, write_stack
from cryoset.provenance import make_provenance, read_provenance
from cryoset.testing import require_shared_data


def _marked(shape: tuple[int, int], dtype: type[np.generic], rng: np.random.Generator) -> np.ndarray:
    """Random image with a unique maximum at (row 1, col 5): catches flips and transposes."""
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    hi = info.max if info else 1.0
    img = rng.integers(0, int(hi) // 2, size=shape) if info else rng.random(shape) * 0.5
    img = img.astype(dtype)
    img[1, 5] = hi
    return img


def test_png_8bit_exact_and_not_flipped(tmp_path: Path, rng: np.random.Generator) -> None:
    img = _marked((9, 12), np.uint8, rng)
    path = tmp_path / "m.png"
    Image.fromarray(img).save(path)
    out = read_image(path, pixel_size_a=5.36)
    assert out.data.dtype == np.float32 and out.data.shape == (9, 12)
    np.testing.assert_array_equal(out.data, img)
    assert np.unravel_index(np.argmax(out.data), out.data.shape) == (1, 5)  # row 0 = top row
    assert out.pixel_size_a == 5.36 and out.source_format == "png" and out.bit_depth == 8


def test_png_16bit_exact(tmp_path: Path, rng: np.random.Generator) -> None:
    img = _marked((7, 10), np.uint16, rng)
    path = tmp_path / "m16.png"
    Image.fromarray(img).save(path)
    out = read_image(path)
    np.testing.assert_array_equal(out.data, img)
    assert out.bit_depth == 16 and out.pixel_size_a is None


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_exact(tmp_path: Path, rng: np.random.Generator, dtype: type[np.generic]) -> None:
    img = _marked((6, 8), dtype, rng)
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, img)
    out = read_image(path, pixel_size_a=1.0)
    np.testing.assert_array_equal(out.data, img.astype(np.float32))
    assert out.source_format == "tiff" and out.bit_depth == np.dtype(dtype).itemsize * 8


def test_jpeg_grayscale(tmp_path: Path) -> None:
    img = np.zeros((16, 32), np.uint8)
    img[:, 16:] = 200  # two flat halves survive JPEG almost exactly
    path = tmp_path / "m.jpg"
    Image.fromarray(img).save(path, quality=95)
    out = read_image(path)
    assert out.source_format == "jpeg" and out.data.shape == (16, 32)
    assert abs(out.data[:, :12].mean() - 0) < 2 and abs(out.data[:, 20:].mean() - 200) < 2


def test_rgb_strict_rejects_permissive_converts_to_luminance(tmp_path: Path, rng: np.random.Generator) -> None:
    rgb = rng.integers(0, 256, size=(5, 6, 3)).astype(np.uint8)
    for suffix in (".png", ".tif"):
        path = tmp_path / f"c{suffix}"
        if suffix == ".png":
            Image.fromarray(rgb).save(path)
        else:
            tifffile.imwrite(path, rgb, photometric="rgb")
        with pytest.raises(InputError, match="not grayscale"):
            read_image(path)
        out = read_image(path, permissive=True)
        expected = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        np.testing.assert_allclose(out.data, expected, rtol=1e-6)


def test_palette_and_gray_alpha(tmp_path: Path) -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    pal = tmp_path / "p.png"
    Image.fromarray(gray).convert("P").save(pal)
    with pytest.raises(InputError, match="palette"):
        read_image(pal)
    np.testing.assert_allclose(read_image(pal, permissive=True).data, gray, atol=0.51)
    la = tmp_path / "la.png"
    Image.fromarray(gray).convert("LA").save(la)
    with pytest.raises(InputError, match="alpha"):
        read_image(la)
    np.testing.assert_array_equal(read_image(la, permissive=True).data, gray)


def test_mrc_micrograph_same_orientation_as_png(tmp_path: Path, rng: np.random.Generator) -> None:
    img = _marked((9, 12), np.uint8, rng)
    png = tmp_path / "m.png"
    Image.fromarray(img).save(png)
    mrc = write_stack(tmp_path / "m.mrc", img.astype(np.float32), 1.7)
    from_mrc, from_png = read_image(mrc), read_image(png)
    np.testing.assert_array_equal(from_mrc.data, from_png.data)  # first stored row = top row
    assert from_mrc.pixel_size_a == pytest.approx(1.7, rel=1e-6)
    assert read_image(mrc, pixel_size_a=2.0).pixel_size_a == 2.0  # explicit value wins
    assert not hasattr(mrc_module, "read_image")  # one reader, in io/images (#17: no io/mrc -> io/images)
    # first stored row: the raw bytes after the 1024-byte header
    raw = np.frombuffer(mrc.read_bytes()[1024 : 1024 + 12 * 4], dtype="<f4")
    np.testing.assert_array_equal(from_mrc.data[0], raw)


def test_mrc_with_zero_pixel_size_gives_none(tmp_path: Path) -> None:
    import mrcfile

    path = tmp_path / "z.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.ones((4, 5), np.float32))
        m.voxel_size = 0.0
    assert read_image(path).pixel_size_a is None
    assert read_image(path, pixel_size_a=1.1).pixel_size_a == 1.1


def test_multi_image_files_are_rejected(tmp_path: Path) -> None:
    stack = write_stack(tmp_path / "s.mrcs", np.zeros((3, 4, 4), np.float32), 1.0)
    with pytest.raises(InputError, match="holds 3 images"):
        read_image(stack)
    vol = write_map(tmp_path / "v.mrc", np.zeros((2, 4, 4), np.float32), 1.0)
    with pytest.raises(InputError, match="holds 2 images"):
        read_image(vol)
    tif = tmp_path / "movie.tif"
    tifffile.imwrite(tif, np.zeros((3, 4, 4), np.uint16), photometric="minisblack")
    with pytest.raises(InputError, match="3 pages"):
        read_image(tif)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.png")
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_image(empty)
    junk = tmp_path / "j.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="cannot read the image"):
        read_image(junk)
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(ok)
    with pytest.raises(InputError, match="must be positive"):
        read_image(ok, pixel_size_a=-1.0)


def test_scale_to_uint8_percentiles() -> None:
    img = np.arange(1000, dtype=np.float64).reshape(20, 50)
    img[0, 0] = -1e9  # outliers are clipped, not allowed to squash the range
    img[-1, -1] = 1e9
    u8 = scale_to_uint8(img, lo_percentile=1.0, hi_percentile=99.0)
    lo, hi = np.percentile(img, [1.0, 99.0])
    assert u8.dtype == np.uint8
    assert u8[0, 0] == 0 and u8[-1, -1] == 255
    mid = np.unravel_index(np.argmin(np.abs(img - (lo + hi) / 2)), img.shape)
    assert abs(int(u8[mid]) - 128) <= 1
    flat = u8.ravel()[1:-1].astype(int)
    assert np.all(np.diff(flat) >= 0)  # monotonic
    assert np.all(scale_to_uint8(np.full((3, 3), 5.0)) == 0)
    nan_img = np.array([[np.nan, 0.0], [1.0, 2.0]])
    assert scale_to_uint8(nan_img, lo_percentile=0, hi_percentile=100).tolist() == [[0, 0], [128, 255]]


def test_write_png_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    img = rng.normal(size=(13, 17)).astype(np.float32)
    img[0, 3] = 50.0  # the top-row outlier stays in the top row
    record = make_provenance("report png", {"k": 2}, argv=["cryoset"])
    path = write_png(tmp_path / "r.png", img, provenance=record)
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (17, 13)
    back = read_image(path)
    np.testing.assert_array_equal(back.data, scale_to_uint8(img))
    assert back.data[0, 3] == 255
    assert read_provenance(path)["parameters"] == {"k": 2}


@pytest.mark.shared_data
def test_real_empiar_10028_png() -> None:
    root = require_shared_data("micrographs", "empiar_10028", "images")
    path = sorted(root.glob("*.png"))[0]
    out = read_image(path, pixel_size_a=5.36)
    assert out.data.shape == (1024, 1024) and out.bit_depth == 8
    assert 0 <= out.data.min() < out.data.max() <= 255
    with Image.open(path) as im:
        np.testing.assert_array_equal(out.data, np.asarray(im))


def test_read_stack_of_single_image_mrc(tmp_path: Path) -> None:
    path = write_stack(tmp_path / "one.mrc", np.eye(4, dtype=np.float32), 1.0)
    assert read_stack(path).shape == (1, 4, 4)
