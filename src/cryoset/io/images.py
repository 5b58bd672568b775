"""Micrographs as 2D images: MRC, PNG, TIFF and JPEG in, 8-bit PNG out (for reports).

Conventions
-----------
* The result is float32 ``(y, x)`` holding the stored values (no normalisation), row 0 being
  the top row of a PNG/TIFF/JPEG and the first stored row of an MRC: images are never flipped.
* Grayscale only, 8- or 16-bit integer (and 32-bit float TIFF). Colour images (RGB, RGBA,
  palette, gray+alpha) are rejected in strict mode; ``permissive=True`` converts them to
  luminance ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601) and drops any alpha channel.
* PNG/TIFF/JPEG carry no trustworthy pixel size: pass ``pixel_size_a=`` (else the result has
  ``pixel_size_a=None``; callers that need one use :func:`cryoset.io.mrc.require_pixel_size`).
  For MRC the header pixel size is used unless ``pixel_size_a=`` overrides it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_path
from cryoset.io.provenance import write_provenance

__all__ = ["ImageData", "read_image", "scale_to_uint8", "write_png"]

PathLike = str | os.PathLike[str]

MRC_SUFFIXES = (".mrc", ".mrcs", ".map", ".ccp4", ".st", ".ali", ".rec")
TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_GRAY_PIL_MODES = {"L": 8, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32, "1": 1}


@dataclass(frozen=True)
class ImageData:
    """One micrograph.

    Attributes
    ----------
    data : ndarray, float32, shape (y, x)
        Stored values, not rescaled.
    pixel_size_a : float or None
        Pixel size in Å (None when neither the file nor the caller gave one).
    source_format : str
        ``"mrc"``, ``"png"``, ``"tiff"`` or ``"jpeg"``.
    bit_depth : int
        Bits per sample as stored (8, 16, 32; 1 for bilevel images).
    """

    data: NDArray[np.float32]
    pixel_size_a: float | None
    source_format: str
    bit_depth: int


def _stripped_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in (".gz", ".bz2"):
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _check_pixel_size(path: Path, pixel_size_a: float | None) -> float | None:
    if pixel_size_a is None:
        return None
    if not np.isfinite(pixel_size_a) or pixel_size_a <= 0:
        raise InputError(path, f"the pixel size {pixel_size_a!r} Å must be positive")
    return float(pixel_size_a)


def _colour_to_gray(path: Path, arr: NDArray[Any], what: str, permissive: bool) -> NDArray[np.float32]:
    if not permissive:
        raise InputError(
            path,
            f"the image is {what}, not grayscale; convert it to grayscale, or read it permissively to "
            "convert it to luminance",
        )
    channels = arr.shape[-1]
    if channels in (2,):  # gray + alpha
        return np.asarray(arr[..., 0], dtype=np.float32)
    rgb = np.asarray(arr[..., :3], dtype=np.float64)
    return np.asarray(rgb @ _LUMA, dtype=np.float32)


def _read_mrc(path: Path, pixel_size_a: float | None, permissive: bool) -> ImageData:
    from cryoset.io.mrc import read_stack

    stack = read_stack(path, permissive=permissive, mmap=False)
    n = len(stack)
    if n != 1:
        raise InputError(path, f"the MRC file holds {n} images (a stack or movie), not one micrograph")
    data = np.ascontiguousarray(stack.data[0], dtype=np.float32)
    depth = int(np.dtype(stack.data.dtype).itemsize * 8)
    pixel = pixel_size_a if pixel_size_a is not None else stack.pixel_size_a
    return ImageData(data=data, pixel_size_a=pixel, source_format="mrc", bit_depth=depth)


def _read_tiff(path: Path, pixel_size_a: float | None, permissive: bool) -> ImageData:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            n_pages = len(tif.pages)
            if n_pages != 1:
                raise InputError(path, f"the TIFF holds {n_pages} pages (a stack or movie), not one micrograph")
            page = tif.pages[0]
            arr = np.asarray(page.asarray())  # type: ignore[union-attr]
            photometric = int(getattr(page, "photometric", 1))
    except InputError:
        raise
    except (ValueError, OSError, tifffile.TiffFileError) as exc:
        raise InputError(path, f"cannot read the TIFF file ({exc})") from exc
    if arr.ndim == 3 and photometric == 2 and arr.shape[-1] in (3, 4):  # RGB(A)
        data = _colour_to_gray(path, arr, "RGB colour", permissive)
    elif arr.ndim == 3 and photometric == 1 and arr.shape[-1] == 2:
        data = _colour_to_gray(path, arr, "grayscale with alpha", permissive)
    elif arr.ndim == 2:
        if photometric == 3:  # palette
            raise InputError(path, "the TIFF is a palette (indexed-colour) image, not grayscale")
        data = np.asarray(arr, dtype=np.float32)
        if photometric == 0:  # MinIsWhite: stored values are inverted intensities
            raise InputError(path, "the TIFF stores inverted intensities (MinIsWhite), which cryoset does not read")
    else:
        raise InputError(path, f"the TIFF image has shape {arr.shape}; expected a 2D grayscale image")
    depth = int(arr.dtype.itemsize * 8) if arr.dtype != np.bool_ else 1
    return ImageData(data=np.ascontiguousarray(data), pixel_size_a=pixel_size_a, source_format="tiff", bit_depth=depth)


def _read_pil(path: Path, pixel_size_a: float | None, permissive: bool) -> ImageData:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                fmt = (img.format or "").lower()
                mode = img.mode
                if mode == "P":
                    if not permissive:
                        raise InputError(
                            path,
                            "the image is palette (indexed) colour, not grayscale; convert it to "
                            "grayscale, or read it permissively to convert it to luminance",
                        )
                    img_rgb = img.convert("RGBA" if "transparency" in img.info else "RGB")
                    arr = np.asarray(img_rgb)
                    mode = img_rgb.mode
                else:
                    arr = np.asarray(img)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(path, f"cannot read the image ({exc})") from exc
    source = "jpeg" if fmt in ("jpeg", "mpo") else fmt or "image"
    if mode in _GRAY_PIL_MODES:
        data = np.asarray(arr, dtype=np.float32)
        depth = _GRAY_PIL_MODES[mode]
    elif mode in ("RGB", "RGBA", "LA", "La", "RGBa", "RGBX"):
        what = "grayscale with alpha" if mode in ("LA", "La") else f"{mode} colour"
        data = _colour_to_gray(path, arr, what, permissive)
        depth = 8
    else:
        raise InputError(path, f"image mode {mode!r} is not supported (need 8- or 16-bit grayscale)")
    if data.ndim != 2:
        raise InputError(path, f"the image has shape {data.shape}; expected a 2D image")
    return ImageData(data=np.ascontiguousarray(data), pixel_size_a=pixel_size_a, source_format=source, bit_depth=depth)


def read_image(
    path: PathLike, *, pixel_size_a: float | None = None, permissive: bool = False
) -> ImageData:
    """Read one micrograph as float32 ``(y, x)`` from MRC, PNG, TIFF or JPEG.

    Parameters
    ----------
    path
        ``.mrc``/``.mrcs``/``.map`` (optionally ``.gz``/``.bz2``), ``.png``, ``.tif``/``.tiff``,
        ``.jpg``/``.jpeg``. Other suffixes are tried as images Pillow can open.
    pixel_size_a
        Pixel size in Å. Overrides the MRC header; the only source for PNG/TIFF/JPEG.
    permissive
        Convert colour images to luminance instead of rejecting them; read MRC files
        permissively (see :mod:`cryoset.io.mrc`).

    Returns
    -------
    ImageData

    Raises
    ------
    InputError
        Missing/unreadable file, colour image (strict), several images/pages in one file,
        non-positive pixel size.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.png"
    >>> _ = write_png(p, np.arange(12, dtype=float).reshape(3, 4))
    >>> read_image(p, pixel_size_a=1.5).data.shape
    (3, 4)
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a directory, not an image")
    if p.stat().st_size == 0:
        raise InputError(p, "the file is empty")
    pixel = _check_pixel_size(p, pixel_size_a)
    suffix = _stripped_suffix(p)
    if suffix in MRC_SUFFIXES:
        return _read_mrc(p, pixel, permissive)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(p, pixel, permissive)
    return _read_pil(p, pixel, permissive)


def scale_to_uint8(
    image: ArrayLike, *, lo_percentile: float = 0.5, hi_percentile: float = 99.5
) -> NDArray[np.uint8]:
    """Map an image linearly to 0…255, clipping at two percentiles of its finite values.

    Parameters
    ----------
    image : array, shape (y, x)
    lo_percentile, hi_percentile
        Percentiles (0–100) mapped to 0 and 255. A constant image maps to 0. Non-finite
        pixels map to 0.

    Returns
    -------
    ndarray, uint8, shape (y, x)
    """
    if not 0.0 <= lo_percentile < hi_percentile <= 100.0:
        raise ValueError("need 0 <= lo_percentile < hi_percentile <= 100")
    arr = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(arr)
    out = np.zeros(arr.shape, dtype=np.uint8)
    if not finite.any():
        return out
    lo, hi = np.percentile(arr[finite], [lo_percentile, hi_percentile])
    if not hi > lo:
        return out
    scaled = np.clip((arr - lo) / (hi - lo), 0.0, 1.0) * 255.0
    out[finite] = np.rint(scaled[finite]).astype(np.uint8)
    return out


def write_png(
    path: PathLike,
    image: ArrayLike,
    *,
    lo_percentile: float = 0.5,
    hi_percentile: float = 99.5,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a 2D image as an 8-bit grayscale PNG (atomically), with percentile scaling.

    Row 0 of ``image`` becomes the top row of the PNG. See :func:`scale_to_uint8`.
    ``provenance`` (a :func:`cryoset.provenance.make_provenance` record) goes to the
    ``<path>.provenance.json`` sidecar.

    Returns
    -------
    Path
    """
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"write_png needs a 2D image, got shape {arr.shape}")
    u8 = scale_to_uint8(arr, lo_percentile=lo_percentile, hi_percentile=hi_percentile)
    out = Path(path)
    with atomic_path(out) as tmp:
        Image.fromarray(u8).save(tmp, format="PNG")
    if provenance is not None:
        write_provenance(out, provenance)
    return out
