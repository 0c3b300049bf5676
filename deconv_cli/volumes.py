"""Volumes on disk: axes strings, voxel sizes, TIFF stacks (ImageJ, OME) and ``.npy``.

An :class:`~deconv_cli.io.Image` read here carries ``axes`` (``"ZYX"``, ``"ZYXC"``,
``"YX"``, ``"YXC"``: always in this order, C last) and ``spacing`` (µm per spatial
axis, or None).

Reading (:func:`read_volume`)
    TIFF with tifffile: multi-page files (pages become Z), ImageJ hyperstacks and
    OME-TIFF, their axes from the metadata. Axes of length 1 (T, a single channel
    plane...) are dropped; a time series (T > 1) or another axis that is neither
    Z, Y, X nor channels is refused. Voxel size: OME ``PhysicalSizeZ/Y/X`` (in µm
    or converted from nm/mm), or ImageJ's ``spacing`` (z) and the X/YResolution
    tags (pixels per unit) with ``unit`` micron/µm/um. ``.npy`` has no metadata: its
    axes are given (``axes="ZYX"``, any order of the letters Z, Y, X, C); without
    them a ``.npy`` follows the image rules (H×W, H×W×C with C ≤ 4; anything else
    refused naming ``--axes``). Other formats are 2-D images
    (:func:`deconv_cli.io.read_image`). Pixel values are scaled as
    :func:`deconv_cli.io.read_image` scales them; the voxel count is checked against
    the pixel limit before decoding.
Writing (:func:`write_volume`)
    ``.tif``: an ImageJ hyperstack (uint8, uint16, float32) with ``spacing``, the
    resolution tags and ``unit=um``; float64, or a name ending ``.ome.tif(f)``, an
    OME-TIFF with ``PhysicalSize*`` in µm. ``.npy``: the array as is (the axes are
    given again on reading). Other formats hold 2-D images and are refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deconv_cli import config, formats, fs
from deconv_cli.atomic import atomic_write
from deconv_cli.errors import InputError, OutputError, mention
from deconv_cli.io import Image, PathLike, WriteResult, encode, read_image, scaled

AXES = "ZYXC"
"""The axis letters, in the order arrays are returned."""

_UNITS = {"µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "nm": 1e-3, "mm": 1e3}


def parse_axes(text: str, ndim: int | None = None) -> str:
    """Check an axes string: the letters Z, Y, X, C, each at most once, Y and X present.

    Parameters
    ----------
    text : str
        E.g. ``"ZYX"``, ``"zyxc"``, ``"CZYX"`` (case-insensitive).
    ndim : int, optional
        The array's number of axes, which the string must match.

    Returns
    -------
    str
        The upper-case string.

    Raises
    ------
    InputError
        Naming ``axes``, the value and the allowed letters.
    """
    axes = str(text).strip().upper()
    if (
        not axes
        or set(axes) - set(AXES)
        or len(set(axes)) != len(axes)
        or not {"Y", "X"} <= set(axes)
    ):
        raise InputError(
            f"`{text}` is not an axes string; use the letters Z, Y, X, C, each once, "
            "with Y and X (e.g. ZYX, ZYXC, YXC)",
            parameter="axes",
        )
    if ndim is not None and len(axes) != ndim:
        raise InputError(
            f"`{text}` names {len(axes)} axes but the array has {ndim}", parameter="axes"
        )
    return axes


def read_volume(
    path: PathLike, *, axes: str | None = None, max_channels: int | None = formats.MAX_CHANNELS
) -> Image:
    """Read a volume or an image, with its axes and voxel size.

    Parameters
    ----------
    path : str or PathLike
        A TIFF (multi-page, ImageJ, OME), a ``.npy``, or any image deconv reads.
    axes : str, optional
        The axes of a ``.npy`` array as stored (e.g. ``"ZYX"``, ``"CZYX"``), or of a
        TIFF without axes metadata (a plain multi-page file: its pages are Z unless
        this says otherwise). Where the file says its axes (ImageJ, OME, tifffile's
        own metadata, an image format), ``axes`` must name the same letters.
    max_channels : int or None
        The most channels of an image read by the 2-D rules (without ``axes``);
        None: any (a conv-layer bank's feature maps).

    Returns
    -------
    Image
        ``data`` transposed to ``Z, Y, X, C`` order (the axes present), ``axes`` and
        ``spacing`` set; alpha only for a 2-D image file.

    Raises
    ------
    InputError
        As :func:`deconv_cli.io.read_image`; also a bad ``axes`` or one the file
        contradicts, a time series, an unknown axis, or more voxels than the pixel limit.
    """
    path = Path(path)
    head = fs.read_head(path)
    fmt = formats.NUMPY if path.suffix.lower() == ".npy" else formats.sniff(head)
    if fmt is formats.NUMPY:
        if axes is None:
            return read_image(path, max_channels=max_channels)
        from deconv_cli.npyfile import load_npy, npy_header

        shape, dtype = npy_header(path, head)
        if shape is not None:
            formats.check_dtype(path, dtype)
            check_voxels(path, parse_axes(axes, len(shape)), shape)
        array, stored, spacing = load_npy(path), parse_axes(axes), None
    elif fmt is formats.TIFF and (stack := _read_tiff(path, axes)) is not None:
        array, stored, spacing = stack
    else:
        image = read_image(path, max_channels=max_channels if axes is None else None)
        if axes is not None:
            _agree(path, axes, image.axes, image.data.ndim)
        return image
    formats.check_dtype(path, array.dtype)
    order = "".join(a for a in AXES if a in stored)
    array = np.moveaxis(array, [stored.index(a) for a in order], range(len(order)))
    if 0 in array.shape:
        raise InputError(f"`{path}` is empty (shape {formats.shape_text(array.shape)})")
    data, source = scaled(path, np.ascontiguousarray(array))
    if spacing is not None:
        spacing = tuple(spacing[a] for a in order if a != "C")
        spacing = spacing if all(s is not None for s in spacing) else None
    return Image(data, None, source, path, axes=order, spacing=spacing)


def _agree(path: Path, given: str, stored: str, ndim: int) -> str:
    """``stored`` (the file's own axes, in its order) when ``given`` names the same
    letters; else one line naming both."""
    axes = parse_axes(given)
    if sorted(axes) != sorted(stored) or len(stored) != ndim:
        raise InputError(
            f"`{given}` contradicts `{path}`, whose axes are `{stored}` (its metadata); "
            "give the same letters or none",
            parameter="axes",
        )
    return stored


def check_voxels(path: Path, axes: str, shape: Sequence[int]) -> None:
    """Refuse a volume of more voxels (channels excluded) than the pixel limit."""
    limit = config.current().max_pixels
    voxels = int(np.prod([n for a, n in zip(axes, shape, strict=True) if a != "C"]))
    if voxels > limit:
        raise InputError(
            f"`{path}` has {voxels:,} voxels ({formats.shape_text(shape)}), above the limit "
            f"of {limit:,}; set {mention('max_pixels', voxels)} to read it, if you trust the file"
        )


def _read_tiff(path: Path, axes: str | None):
    """``(array, axes, spacing by axis letter)`` of a TIFF's first series, or None for
    a one-page 2-D image (read as :func:`deconv_cli.io.read_image` reads it: alpha,
    palette, CMYK)."""
    from deconv_cli.codecs import decode_error

    try:
        with _open_tiff(path) as tif:
            layout = tiff_layout(tif, path, axes)
            if layout is None:
                return None
            array = tif.series[0].asarray().reshape(layout.shape)
    except (InputError, MemoryError):
        raise
    except Exception as err:
        raise decode_error(path, err) from err
    return array, layout.axes, layout.spacing


@contextmanager
def _open_tiff(path: Path):
    import tifffile

    from deconv_cli.codecs import tifffile_quiet

    with tifffile_quiet(), tifffile.TiffFile(path) as tif:
        yield tif


@dataclass(frozen=True)
class TiffLayout:
    """A TIFF stack's first series as deconv reads it: ``shape`` and ``axes`` as stored
    (axes of length 1 dropped), ``spacing`` by axis letter, ``dtype``, and ``offset``:
    where its pixels start when they are one contiguous uncompressed block, else None."""

    shape: tuple[int, ...]
    axes: str
    spacing: dict[str, float | None]
    dtype: np.dtype
    offset: int | None


def tiff_layout(tif, path: Path, axes: str | None) -> TiffLayout | None:
    """The :class:`TiffLayout` of an open ``tifffile.TiffFile``, or None for a one-page
    2-D image; ``axes`` as for :func:`read_volume` (checked against the metadata)."""
    from deconv_cli.codecs import main_pages

    if not tif.series:
        return None  # no readable page: read_image says what is wrong
    series = tif.series[0]
    stored = series.axes.upper().replace("S", "C").replace("I", "Z").replace("Q", "Z")
    sizes = zip(stored, series.shape, strict=True)
    keep = [i for i, (a, n) in enumerate(sizes) if n > 1 or a in "YX"]
    shape = tuple(series.shape[i] for i in keep)
    stored = "".join(stored[i] for i in keep)
    # the metadata's axes are facts; a plain file's are tifffile's guesses
    said = tif.is_imagej or tif.is_ome or "axes" in (tif.shaped_metadata or [{}])[0]
    if axes is not None and not said:
        stored = parse_axes(axes, len(shape))
    elif len(set(stored)) != len(stored) or set(stored) - set(AXES):
        raise InputError(
            f"`{path}` is a TIFF with axes `{series.axes}` "
            f"(shape {formats.shape_text(series.shape)}); deconv reads Z, Y, X and "
            "channels (save one time point or one position per file)"
        )
    elif axes is not None:
        stored = _agree(path, axes, stored, len(shape))
    if "Z" not in stored and len(main_pages(tif)) == 1:
        return None
    formats.check_dtype(path, series.dtype)
    check_voxels(path, stored, shape)
    return TiffLayout(shape, stored, _tiff_spacing(tif), series.dtype, series.dataoffset)


def _tiff_spacing(tif) -> dict[str, float | None]:
    """Voxel size in µm by axis letter from OME or ImageJ metadata (None: not said)."""
    spacing: dict[str, float | None] = {"Z": None, "Y": None, "X": None}
    if tif.is_ome and tif.ome_metadata:
        pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", tif.ome_metadata)
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0))) if pixels else {}
        for a in "ZYX":
            value = attrs.get(f"PhysicalSize{a}")
            scale = _UNITS.get(attrs.get(f"PhysicalSize{a}Unit", "µm"))
            if value is not None and scale is not None:
                spacing[a] = float(value) * scale
        return spacing
    meta = tif.imagej_metadata or {}
    scale = _UNITS.get(str(meta.get("unit", "")).replace("\\u00B5", "µ"))
    if scale is None:
        return spacing
    if meta.get("spacing"):
        spacing["Z"] = float(meta["spacing"]) * scale
    page = tif.pages.first
    for a, tag in (("X", "XResolution"), ("Y", "YResolution")):
        if tag in page.tags:
            numerator, denominator = page.tags[tag].value
            if numerator:
                spacing[a] = denominator / numerator * scale
    return spacing


def write_volume(
    path: PathLike,
    data: np.ndarray,
    *,
    axes: str,
    spacing: Sequence[float] | None = None,
    dtype: str | np.dtype | None = None,
    source_dtype: np.dtype | None = None,
    overwrite: bool = False,
    inputs: Sequence[PathLike] = (),
) -> WriteResult:
    """Write a volume atomically, keeping its axes and voxel size.

    Parameters
    ----------
    path : str or PathLike
        ``.tif``/``.tiff`` (ImageJ hyperstack; OME-TIFF for float64 or a name
        ending ``.ome.tif``) or ``.npy``.
    data : ndarray
        Values as :func:`deconv_cli.io.write_image` takes them, with axes ``axes``.
    axes : str
        ``data``'s axes in ``Z, Y, X, C`` order (``"ZYX"``, ``"ZYXC"``, ``"YX"``...).
    spacing : sequence of float, optional
        µm per spatial axis (C excluded), written to the TIFF's metadata.
    dtype, source_dtype, overwrite, inputs
        As :func:`deconv_cli.io.write_image`.

    Returns
    -------
    WriteResult
        ``clipped`` counts voxels with a channel clipped.

    Raises
    ------
    OutputError
        A format that holds 2-D images only, axes not in order or not matching
        ``data``, a spacing of the wrong length, and :func:`~deconv_cli.io.write_image`'s
        refusals.
    """
    path = Path(path)
    fmt = check_volume_format(path, dtype)
    data = np.asarray(data)
    order = "".join(a for a in AXES if a in axes)
    if axes != order or len(axes) != data.ndim or not {"Y", "X"} <= set(axes):
        raise OutputError(
            f"`{path}`: axes `{axes}` do not describe data of shape "
            f"{formats.shape_text(data.shape)} in Z, Y, X, C order"
        )
    spatial = axes.replace("C", "")
    if spacing is not None and len(spacing) != len(spatial):
        raise OutputError(f"`{path}`: spacing {tuple(spacing)} does not match axes `{spatial}`")
    fs.check_target(path, overwrite=overwrite, inputs=inputs)
    implied = source_dtype if source_dtype is not None else data.dtype
    out_dtype = formats.output_dtype(fmt, dtype, implied)
    pixels, clipped = encode(path, data, out_dtype, channels="C" in axes)
    sizes = dict(zip(spatial, spacing, strict=True)) if spacing is not None else {}

    def write(tmp: Path) -> None:
        if fmt is formats.NUMPY:
            np.save(tmp, np.ascontiguousarray(pixels), allow_pickle=False)
            return
        import tifffile

        planes, stored = _channel_planes(pixels, axes)
        options = tiff_options(path, out_dtype, stored, sizes)
        tifffile.imwrite(tmp, np.ascontiguousarray(planes), **options)

    atomic_write(path, write, overwrite=overwrite, inputs=inputs)
    return WriteResult(path=path, dtype=out_dtype, clipped=clipped)


def check_volume_format(path: PathLike, dtype: str | np.dtype | None = None) -> formats.Format:
    """The format to write a volume to ``path`` in (TIFF or NumPy), checked before the work.

    Raises
    ------
    OutputError
        Another format (they hold 2-D images), or a ``dtype`` the format cannot hold.
    """
    fmt = formats.check_format(path, dtype)
    if fmt not in (formats.TIFF, formats.NUMPY):
        raise OutputError(f"`{path}`: {fmt.name} holds 2-D images; write .tif or .npy")
    return fmt


def _channel_planes(pixels: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Channels stored as planes before Y, X (ImageJ's and OME's ``ZCYX``): a last
    axis is otherwise taken for the samples of RGB pixels."""
    if "C" not in axes:
        return pixels, axes
    return np.moveaxis(pixels, -1, axes.index("Y")), axes.replace("YXC", "CYX")


def tiff_options(path: Path, dtype: np.dtype, axes: str, sizes: dict) -> dict:
    """``tifffile.imwrite``'s keywords for a volume of ``axes`` (channel planes before
    Y, X) and voxel ``sizes`` (µm by axis letter): an ImageJ hyperstack, or an OME-TIFF
    for float64 or a name ending ``.ome.tif``."""
    metadata: dict = {"axes": axes}
    options: dict = {"photometric": "minisblack", "metadata": metadata}  # never RGB
    if dtype == np.float64 or path.name.lower().endswith((".ome.tif", ".ome.tiff")):
        options["ome"] = True
        for a, size in sizes.items():
            metadata[f"PhysicalSize{a}"] = size
            metadata[f"PhysicalSize{a}Unit"] = "µm"
    else:
        options["imagej"] = True
        if sizes:
            metadata["unit"] = "um"
            if "Z" in sizes:
                metadata["spacing"] = sizes["Z"]
            options["resolution"] = (1 / sizes["X"], 1 / sizes["Y"])
    return options
