"""Tests for deconv_cli.formats: the registry is the one source of the formats.

Oracles: files are written and read back with Pillow, tifffile, pypng and numpy
directly; expected pixel values are computed by hand (``round(x · max)``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import png
import pytest
import tifffile
from PIL import Image as PILImage

from deconv_cli import batch, comparison, formats, io, kernels
from deconv_cli.errors import InputError

DOCS = Path(__file__).resolve().parent.parent / "docs"
RNG_SEED = 20261203


def _rng():
    return np.random.default_rng(RNG_SEED)


# --------------------------------------------------------------------------- one source


def test_every_extension_belongs_to_one_format():
    extensions = [ext for fmt in formats.FORMATS for ext in fmt.extensions]
    assert len(extensions) == len(set(extensions))
    assert all(re.fullmatch(r"\.[a-z]+", ext) for ext in extensions)
    assert set(formats.WRITE_EXTENSIONS) <= set(formats.READ_EXTENSIONS)


def test_conventions_table_is_the_registry():
    """docs/conventions.md's format table lists exactly the registry, read and written."""
    text = (DOCS / "conventions.md").read_text()
    rows = re.findall(r"^\| (\w+) \| ((?:`[^`]+`)) \| [^|]+ \| ([^|]+) \|", text, re.M)
    documented = {name: (tuple(ext.strip("`").split()), written.strip() != "—")
                  for name, ext, written in rows}  # fmt: skip
    registry = {fmt.name: (fmt.extensions, fmt.writable) for fmt in formats.FORMATS}
    assert documented == registry
    writing = re.search(
        r"\*\*Writing\.\*\* The format comes from the output's extension: ([^.]*\.[^\n]*)", text
    )
    listed = re.findall(r"\.\w+", writing.group(1))
    assert tuple(listed) == formats.WRITE_EXTENSIONS


def test_batch_guide_lists_the_registry():
    text = (DOCS / "guide" / "batches.md").read_text()
    listed = re.search(r"A folder contributes its image files \(`([^`]+)`", text).group(1)
    assert sorted(listed.split()) == sorted(formats.READ_EXTENSIONS)


def test_cli_help_names_only_registry_formats():
    from click.testing import CliRunner

    from deconv_cli.cli import main

    runner = CliRunner()
    convolve = runner.invoke(main, ["convolve", "--help"]).output
    metavar = re.search(r"--format ([a-z|]+)", convolve).group(1)
    assert set(metavar.split("|")) == {
        fmt.extensions[0][1:] for fmt in formats.FORMATS if fmt.writable
    }
    assert set(formats.FORMAT_NAMES.values()) == {f".{name}" for name in metavar.split("|")}
    help_text = runner.invoke(main, ["kernels", "--help"]).output
    named = set(re.findall(r"(?<![\w/])\.[a-z]{3,4}\b", help_text)) - set(kernels.TEXT_SUFFIXES)
    assert named and named <= set(formats.READ_EXTENSIONS)
    listing = runner.invoke(main, ["kernels"]).output
    assert all(ext in listing for ext in formats.READ_EXTENSIONS)


def _make(path: Path, fmt: formats.Format) -> None:
    """A small image of ``fmt`` at ``path``, written by an independent library."""
    pixels = _rng().integers(0, 256, (6, 5, 3), dtype=np.uint8)
    if fmt is formats.NUMPY:
        np.save(path, pixels / 255.0)
    elif fmt is formats.TIFF:
        tifffile.imwrite(path, pixels)
    else:
        pil_format = {"PNM": "PPM", "JPEG": "JPEG"}.get(fmt.name, fmt.name)
        PILImage.fromarray(pixels).save(path, format=pil_format)


def test_batch_compare_and_kernels_accept_the_same_files(tmp_path):
    made = []
    for fmt in formats.FORMATS:
        for ext in fmt.extensions:
            path = tmp_path / f"i_{ext[1:]}{ext.upper() if ext == '.gif' else ext}"
            _make(path, fmt)
            made.append(path)
    (tmp_path / "notes.txt").write_text("not an image")
    scanned = [s.path for s in batch.collect([str(tmp_path)])]
    assert sorted(scanned) == sorted(made)
    assert sorted(p for p in tmp_path.iterdir() if comparison._is_image_file(p)) == sorted(made)
    assert all(p.suffix.lower() in kernels.FILE_SUFFIXES for p in made)
    for path in made:  # and each is read, as an image and (made grey) as a kernel image
        assert io.read_image(path).data.shape[:2] == (6, 5)
        if path.suffix != ".npy":  # a kernel .npy is a plain array, never an image
            assert kernels.load_kernel(str(path)).array.shape == (6, 5)


# --------------------------------------------------------------------------- magic bytes


@pytest.mark.parametrize("fmt", formats.FORMATS, ids=lambda f: f.name)
def test_misnamed_file_read_by_its_content(tmp_path, fmt):
    right = tmp_path / f"right{fmt.extensions[0]}"
    _make(right, fmt)
    wrong_ext = ".tif" if fmt is not formats.TIFF else ".png"
    wrong = tmp_path / f"wrong{wrong_ext}"
    wrong.write_bytes(right.read_bytes())
    assert formats.sniff(wrong.read_bytes()[:64]) is fmt
    np.testing.assert_array_equal(io.read_image(wrong).data, io.read_image(right).data)
    assert batch.sniff(wrong.read_bytes()[:64]) == fmt.extensions[0]


def test_unknown_magic_goes_to_pillow(tmp_path):
    PILImage.fromarray(np.full((4, 4), 128, np.uint8)).save(tmp_path / "a.tga", format="TGA")
    assert formats.sniff((tmp_path / "a.tga").read_bytes()[:64]) is None
    np.testing.assert_array_equal(
        io.read_image(tmp_path / "a.tga").data, np.full((4, 4), 128 / 255)
    )


def test_ambiguous_3d_npy_names_axes(tmp_path):
    np.save(tmp_path / "stack.npy", np.zeros((16, 64, 64)))
    with pytest.raises(InputError, match=r"16×64×64 is ambiguous.*`axes`"):
        io.read_image(tmp_path / "stack.npy")


# --------------------------------------------------------------------------- round trips


def _independent_read(path: Path, fmt: formats.Format) -> np.ndarray:
    if fmt is formats.NUMPY:
        return np.load(path)
    if fmt is formats.TIFF:
        return tifffile.imread(path)
    if fmt is formats.PNG:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        array = np.vstack([np.asarray(r) for r in rows]).reshape(height, width, info["planes"])
        return array[:, :, 0] if info["planes"] == 1 else array
    return np.asarray(PILImage.open(path))


_CASES = [
    (fmt, dtype, channels)
    for fmt in formats.FORMATS
    if fmt.writable
    for dtype in fmt.dtypes
    for channels in (1, 3)
]


@pytest.mark.parametrize("fmt, dtype, channels", _CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_round_trip_against_an_independent_reader(tmp_path, fmt, dtype, channels):
    shape = (7, 9) if channels == 1 else (7, 9, channels)
    values = _rng().random(shape)
    path = tmp_path / f"o{fmt.extensions[-1]}"
    result = io.write_image(path, values, dtype=dtype)
    assert result.dtype == dtype
    stored = _independent_read(path, fmt)
    assert stored.shape == shape and stored.dtype == dtype
    if dtype.kind == "u":
        expected = np.rint(values * np.iinfo(dtype).max).astype(dtype)
    else:
        expected = values.astype(dtype)
    if fmt is formats.JPEG:  # lossy: quality 95, no chroma subsampling, on noise: > 35 dB
        from skimage.metrics import peak_signal_noise_ratio

        assert peak_signal_noise_ratio(expected, stored) > 35
    else:
        np.testing.assert_array_equal(stored, expected)
    back = io.read_image(path).data
    np.testing.assert_allclose(back, stored / (np.iinfo(dtype).max if dtype.kind == "u" else 1))


def test_read_only_formats_refused_as_outputs(tmp_path):
    from deconv_cli.errors import OutputError

    for fmt in formats.FORMATS:
        if not fmt.writable:
            with pytest.raises(OutputError, match="unknown output format"):
                io.write_image(tmp_path / f"o{fmt.extensions[0]}", np.zeros((2, 2)))


def test_folder_batch_with_a_read_only_format_needs_format(tmp_path):
    from deconv_cli.errors import OutputError

    folder = tmp_path / "in"
    folder.mkdir()
    _make(folder / "a.png", formats.PNG)
    _make(folder / "b.webp", formats.WEBP)
    sources = batch.collect([str(folder)])
    with pytest.raises(OutputError, match=r"`.*b\.webp` is WebP, which deconv reads but does not"):
        batch.plan(sources, str(tmp_path / "out") + "/")
    items = batch.plan(sources, str(tmp_path / "out") + "/", fmt="png")
    assert [item.output.name for item in items] == ["a.png", "b.png"]


def test_standard_input_in_a_read_only_format_needs_format():
    from deconv_cli.errors import OutputError

    gif = b"GIF89a" + bytes(58)
    with pytest.raises(OutputError, match=r"^`-` is GIF, .* give `fmt`"):
        batch.plan([batch.Source(None, Path("stdin"))], "-", stdin_head=gif)
    (item,) = batch.plan([batch.Source(None, Path("stdin"))], "-", fmt="tif", stdin_head=gif)
    assert item.extension == ".tif"
