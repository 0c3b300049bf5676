"""The failure catalogue: every bad input, option or output path, across every command.

Each refused case must exit 2 with exactly one line on stderr, ``deconv: error: ...``,
nothing on stdout, no traceback, no output file or temporary file left behind, and
every input byte-for-byte unchanged. The cases a demanding user expects to work
(1×1 and 1×N images, bool images, kernels larger than the image, ...) are tested
to work, against scipy.

Most cases run through click's CliRunner with ``DECONV_DEBUG=1``, so that a bug
(an exception other than the usage error) surfaces as the exception itself rather
than as the one-line internal error; a handful run the real ``python -m deconv_cli``
to check the real stderr.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from scipy import ndimage

from deconv_cli.cli import main

MARKER = "UNPICKLED"  # created by unpickling the booby-trapped .npy files: must never exist


class _Booby:
    """Unpickling this calls ``open(MARKER_PATH, "w")``, creating the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --------------------------------------------------------------------------- the workspace


def _png_bytes(array: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", array, extension=".png")


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


def build_workspace(ws: Path) -> None:
    """Every bad (and good) input the catalogue uses, in one directory."""
    rng = np.random.default_rng(2024)
    grey = rng.random((16, 16))
    np.save(ws / "good.npy", grey)
    iio.imwrite(ws / "good.png", (grey * 255).astype(np.uint8))
    np.save(ws / "kernel.npy", np.full((3, 3), 1 / 9))
    (ws / "emptydir").mkdir()
    (ws / "empty.png").write_bytes(b"")
    (ws / "empty.npy").write_bytes(b"")
    (ws / "text.png").write_text("this is not an image\n")
    png = _png_bytes((rng.random((16, 16)) * 255).astype(np.uint8))
    (ws / "trunc.png").write_bytes(png[: len(png) // 2])
    (ws / "corrupt.png").write_bytes(_flip(png, png.index(b"IDAT") + 12))
    tifffile.imwrite(ws / "src.tif", rng.random((16, 16)).astype(np.float32))
    tif = (ws / "src.tif").read_bytes()
    (ws / "src.tif").unlink()
    (ws / "trunc.tif").write_bytes(tif[: len(tif) // 2])
    (ws / "corrupt.tif").write_bytes(tif[:4] + struct.pack("<I", 10**6) + tif[8:])
    jpg = iio.imwrite("<bytes>", (rng.random((16, 16, 3)) * 255).astype(np.uint8), extension=".jpg")
    (ws / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    sof = jpg.index(b"\xff\xc0")
    (ws / "corrupt.jpg").write_bytes(jpg[: sof + 5] + b"\x00\x00\x00\x00" + jpg[sof + 9 :])
    np.save(ws / "zero.npy", np.zeros((0, 0)))
    np.save(ws / "zerorows.npy", np.zeros((0, 7)))
    nan = grey.copy()
    nan[3, 4] = np.nan
    np.save(ws / "nan.npy", nan)
    inf = grey.astype(np.float32)
    inf[0, 0] = np.inf
    tifffile.imwrite(ws / "inf.tif", inf)
    np.save(ws / "fourd.npy", rng.random((2, 8, 8, 3)))
    np.save(ws / "u32.npy", (rng.random((16, 16)) * 1000).astype(np.uint32))
    tifffile.imwrite(ws / "u32.tif", (rng.random((16, 16)) * 1000).astype(np.uint32))
    np.save(ws / "i16.npy", (rng.random((16, 16)) * 1000).astype(np.int16))
    np.save(ws / "complex.npy", grey + 1j * grey)
    np.save(ws / "pickled.npy", np.array([_Booby(ws / MARKER)], dtype=object), allow_pickle=True)
    (ws / "rawpickle.npy").write_bytes(pickle.dumps(_Booby(ws / MARKER), protocol=4))
    np.savez(ws / "archive.npz", a=grey)
    (ws / "archive.npz").rename(ws / "archive.npy")
    npy = (ws / "good.npy").read_bytes()
    (ws / "truncated.npy").write_bytes(npy[: len(npy) - 100])
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (16000, 16000), }"
    header += b" " * (117 - len(header)) + b"\n"
    (ws / "liar.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header + b"0")
    os.mkfifo(ws / "pipe.png")


def digests(ws: Path) -> dict[str, str]:
    """sha256 of every regular file under ``ws`` (the FIFO is never opened)."""
    return {
        str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(ws.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalogue")
    build_workspace(root)
    return root


def invoke(*args, env=None):
    """Run the CLI in-process; bugs surface as exceptions (DECONV_DEBUG=1)."""
    return CliRunner().invoke(
        main, [str(a) for a in args], env={"DECONV_DEBUG": "1", **(env or {})}
    )


def temp_files(*directories: Path) -> list[Path]:
    return [
        p for d in directories if d.is_dir() for p in d.iterdir() if p.name.startswith(".deconv")
    ]


def assert_refused(result, needle: str) -> str:
    """Exit 2, one ``deconv: error:`` line on stderr containing ``needle``, stdout empty."""
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("deconv: error: "), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == "", result.stdout
    assert needle in result.stderr, result.stderr
    return result.stderr


@pytest.fixture
def check(ws, tmp_path):
    """Run a refused case: inputs unchanged, nothing written, no marker, no temp file."""

    def run(argv, needle):
        before = digests(ws)
        fill = {"ws": ws, "out": tmp_path / "out.npy", "tmp": tmp_path}
        result = invoke(*(str(a).format(**fill) for a in argv))
        message = assert_refused(result, needle)
        assert digests(ws) == before
        assert not (ws / MARKER).exists()
        assert not (tmp_path / "out.npy").exists()
        assert temp_files(ws, tmp_path) == []
        return message

    return run


# --------------------------------------------------------------------------- bad input files

# defect -> (file, needle when read as an image, needle when read as a kernel; None: accepted)
DEFECTS = {
    "missing": ("missing.png", "no such file", "not found"),
    "empty-png": ("empty.png", "is empty (0 bytes)", "is empty (0 bytes)"),
    "empty-npy": ("empty.npy", "is empty (0 bytes)", "is empty (0 bytes)"),
    "text-named-png": ("text.png", "not a recognised image format", "not a recognised image"),
    "truncated-png": ("trunc.png", "truncated", "truncated"),
    "truncated-tiff": ("trunc.tif", "truncated", "truncated"),
    "truncated-jpeg": ("trunc.jpg", "Truncated", "Truncated"),
    "truncated-npy": ("truncated.npy", "truncated", "truncated"),
    "header-lies-npy": ("liar.npy", "is truncated: its header promises 16000×16000", "truncated"),
    "corrupt-png": ("corrupt.png", "cannot be read as an image", "cannot be read as an image"),
    "corrupt-tiff": ("corrupt.tif", "is a corrupt TIFF", "is a corrupt TIFF"),
    "corrupt-jpeg": ("corrupt.jpg", "cannot be read as an image", "cannot be read as an image"),
    "0x0": ("zero.npy", "is empty (shape 0×0)", "is empty"),
    "0xN": ("zerorows.npy", "is empty (shape 0×7)", "is empty"),
    "nan": ("nan.npy", "has 1 NaN/Inf pixels", "1 NaN/Inf"),
    "inf-tiff": ("inf.tif", "has 1 NaN/Inf pixels", "1 NaN/Inf"),
    "4-D": ("fourd.npy", "has 4-D shape 2×8×8×3", None),
    "uint32-npy": ("u32.npy", "pixel type `uint32`", None),
    "uint32-tiff": ("u32.tif", "pixel type `uint32`", None),
    "int16": ("i16.npy", "pixel type `int16`", None),
    "complex": ("complex.npy", "pixel type `complex128`", "complex values"),
    "pickled-npy": ("pickled.npy", "pickled), which are never loaded", "never loaded"),
    "raw-pickle": ("rawpickle.npy", "holds pickled Python data, which is never loaded", "pickled"),
    "npz-named-npy": ("archive.npy", "is an .npz archive", "is an .npz archive"),
    "fifo": ("pipe.png", "not a regular file", "not a regular file"),
}

IMAGE_COMMANDS = {
    "convolve": ["convolve", "{f}", "-k", "box:size=3", "-o", "{out}"],
    "transpose": ["transpose", "{f}", "-k", "box:size=3", "-o", "{out}"],
    "invert": ["invert", "{f}", "-k", "box:size=3", "-o", "{out}"],
    "analyze": ["analyze", "{f}", "-k", "box:size=3"],
    "roundtrip": ["roundtrip", "{f}", "-k", "box:size=3", "-m", "wiener"],
    "compare-ref": ["compare", "{f}", "{ws}/good.npy"],
    "compare-cand": ["compare", "{ws}/good.npy", "{f}"],
}
KERNEL_COMMANDS = {
    "convolve-k": ["convolve", "{ws}/good.npy", "-k", "{f}", "-o", "{out}"],
    "kernels-show": ["kernels", "show", "{f}"],
}


def _matrix():
    for defect, (name, image_needle, kernel_needle) in DEFECTS.items():
        for command, argv in IMAGE_COMMANDS.items():
            yield pytest.param(name, argv, image_needle, id=f"{defect}-{command}")
        if kernel_needle is not None:
            for command, argv in KERNEL_COMMANDS.items():
                yield pytest.param(name, argv, kernel_needle, id=f"{defect}-{command}")


@pytest.mark.parametrize("name,argv,needle", list(_matrix()))
def test_bad_input_file_is_refused(check, ws, name, argv, needle):
    message = check([a.replace("{f}", str(ws / name)) for a in argv], needle)
    assert str(ws / name) in message  # the message names the file


DIRECTORY = {
    "convolve": (["convolve", "{ws}/emptydir", "-k", "box", "-o", "{out}"], "no image files"),
    "transpose": (["transpose", "{ws}/emptydir", "-k", "box", "-o", "{out}"], "no image files"),
    "invert": (["invert", "{ws}/emptydir", "-k", "box", "-o", "{out}"], "no image files"),
    "analyze": (["analyze", "{ws}/emptydir", "-k", "box"], "is a directory, not an image"),
    "roundtrip": (["roundtrip", "{ws}/emptydir", "-k", "box"], "is a directory, not an image"),
    "compare-ref": (["compare", "{ws}/emptydir", "{ws}/good.npy"], "REFERENCE `"),
    "compare-cand": (["compare", "{ws}/good.npy", "{ws}/emptydir"], "CANDIDATE `"),
    "kernel": (
        ["convolve", "{ws}/good.npy", "-k", "{ws}/emptydir", "-o", "{out}"],
        "not a regular",
    ),
    "kernels-show": (["kernels", "show", "{ws}/emptydir"], "is not a regular file"),
    "reference": (
        ["invert", "{ws}/good.npy", "-k", "box", "--reference", "{ws}/emptydir", "-o", "{out}"],
        "is a directory",
    ),
}


@pytest.mark.parametrize("argv,needle", DIRECTORY.values(), ids=DIRECTORY.keys())
def test_directory_where_a_file_is_expected(check, argv, needle):
    check(argv, needle)


def test_pickles_were_never_unpickled(ws):
    """The booby-trapped files are valid pickles: loading them would create the marker."""
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(ws / "pickled.npy")
    assert not (ws / MARKER).exists()
    copy = ws.parent / "trap-check"
    copy.mkdir(exist_ok=True)
    trap = pickle.dumps(_Booby(copy / MARKER))
    pickle.loads(trap)  # the trap works when a pickle is loaded...
    assert (copy / MARKER).exists()
    shutil.rmtree(copy)
    assert not (ws / MARKER).exists()  # ...and deconv never loaded one


# --------------------------------------------------------------------------- options

OPTIONS = {
    # geometry
    "stride-0": (["convolve", "{ws}/good.npy", "-k", "box", "--stride", "0"], "--stride: `0`"),
    "stride-negative": (["convolve", "{ws}/good.npy", "-k", "box", "--stride", "-1"], "--stride"),
    "stride-2x0": (["convolve", "{ws}/good.npy", "-k", "box", "--stride", "2x0"], "--stride"),
    "stride-word": (["convolve", "{ws}/good.npy", "-k", "box", "--stride", "two"], "--stride"),
    "dilation-0": (["convolve", "{ws}/good.npy", "-k", "box", "--dilation", "0"], "--dilation"),
    "padding-negative": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--padding", "-1"],
        "--padding",
    ),
    "mode-unknown": (["convolve", "{ws}/good.npy", "-k", "box", "--mode", "half"], "--mode"),
    "boundary-unknown": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--boundary", "bounce"],
        "--boundary",
    ),
    "output-shape-0": (
        ["transpose", "{ws}/good.npy", "-k", "box", "--output-shape", "0x4"],
        "--output-shape",
    ),
    "output-shape-unreachable": (
        ["transpose", "{ws}/good.npy", "-k", "box", "--stride", "2", "--output-shape", "90x90"],
        "--output-shape",
    ),
    "output-shape-on-convolve": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--output-shape", "4x4"],
        "No such option '--output-shape'",
    ),
    "kernel-larger-valid": (
        ["convolve", "{ws}/good.npy", "-k", "box:size=17", "--mode", "valid"],
        "larger than the image",
    ),
    "kernel-larger-padded-valid": (
        ["convolve", "{ws}/good.npy", "-k", "box:size=40", "--padding", "2"],
        "larger than the padded image",
    ),
    # kernel specs
    "family-unknown": (["convolve", "{ws}/good.npy", "-k", "gausian"], "did you mean `gaussian`"),
    "family-unknown-with-params": (
        ["convolve", "{ws}/good.npy", "-k", "blur:radius=2"],
        "unknown kernel family `blur`",
    ),
    "parameter-unknown": (
        ["convolve", "{ws}/good.npy", "-k", "box:radius=3"],
        "unknown parameter `radius`",
    ),
    "parameter-no-value": (["convolve", "{ws}/good.npy", "-k", "gaussian:sigma"], "name=value"),
    "parameter-twice": (["convolve", "{ws}/good.npy", "-k", "box:size=3,size=5"], "twice"),
    "sigma-0": (["convolve", "{ws}/good.npy", "-k", "gaussian:sigma=0"], "must be > 0"),
    "sigma-negative": (["convolve", "{ws}/good.npy", "-k", "gaussian:sigma=-1"], "must be > 0"),
    "sigma-nan": (["convolve", "{ws}/good.npy", "-k", "gaussian:sigma=nan"], "finite"),
    "sigma-inf": (["convolve", "{ws}/good.npy", "-k", "gaussian:sigma=inf"], "finite"),
    "sigma-huge": (["convolve", "{ws}/good.npy", "-k", "gaussian:sigma=1e10"], "largest side"),
    "size-0": (["convolve", "{ws}/good.npy", "-k", "box:size=0"], "must be > 0"),
    "size-huge": (["convolve", "{ws}/good.npy", "-k", "box:size=100000"], "largest kernel side"),
    "size-fraction": (["convolve", "{ws}/good.npy", "-k", "box:size=2.5"], "whole number"),
    "radius-0": (["convolve", "{ws}/good.npy", "-k", "disk:radius=0"], "must be > 0"),
    "length-negative": (["convolve", "{ws}/good.npy", "-k", "motion:length=-3"], "must be > 0"),
    "identity-even": (["convolve", "{ws}/good.npy", "-k", "identity:size=2"], "must be odd"),
    "laplacian-neighbors": (
        ["convolve", "{ws}/good.npy", "-k", "laplacian:neighbors=6"],
        "is not one of `4`, `8`",
    ),
    "kernel-empty-spec": (["convolve", "{ws}/good.npy", "-k", ""], "kernel spec is empty"),
    "kernel-all-zero": (
        ["convolve", "{ws}/good.npy", "-k", "{tmp}/zeros.npy"],
        "is all zeros",
    ),
    "kernel-zero-sum-normalize": (
        ["convolve", "{ws}/good.npy", "-k", "laplacian", "--normalize"],
        "sums to 0",
    ),
    "kernel-bank-channels": (
        ["convolve", "{ws}/good.npy", "-k", "{ws}/fourd.npy"],
        "input channels",
    ),
    # invert
    "method-unknown": (["invert", "{ws}/good.npy", "-k", "box", "-m", "magic"], "--method"),
    "iterations-0": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "cgls", "--iterations", "0"],
        "--iterations",
    ),
    "iterations-negative": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "cgls", "--iterations", "-5"],
        "--iterations",
    ),
    "tol-negative": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "cgls", "--tol", "-1"],
        "--tol",
    ),
    "tol-nan": (["invert", "{ws}/good.npy", "-k", "box", "-m", "cgls", "--tol", "nan"], "--tol"),
    "reg-0": (["invert", "{ws}/good.npy", "-k", "box", "-m", "tikhonov", "--reg", "0"], "--reg"),
    "reg-negative": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "tikhonov", "--reg", "-1"],
        "--reg",
    ),
    "reg-nan": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "tikhonov", "--reg", "nan"],
        "--reg",
    ),
    "reg-inf": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "tikhonov", "--reg", "inf"],
        "--reg",
    ),
    "nsr-0": (["invert", "{ws}/good.npy", "-k", "box", "-m", "wiener", "--nsr", "0"], "--nsr"),
    "noise-sigma-negative": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "wiener", "--noise-sigma", "-1"],
        "--noise-sigma",
    ),
    "rcond-0": (["invert", "{ws}/good.npy", "-k", "box", "-m", "inverse", "--rcond", "0"], "rcond"),
    # noise
    "noise-family": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--noise", "salt:amount=1"],
        "--noise",
    ),
    "noise-sigma-negative-convolve": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--noise", "gaussian:sigma=-1"],
        "--noise",
    ),
    "noise-poisson-0": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--noise", "poisson:peak=0"],
        "--noise",
    ),
    "noise-overflow": (
        [
            "convolve",
            "{ws}/good.npy",
            "-k",
            "box",
            "--noise",
            "gaussian:sigma=1e308",
            "--seed",
            "1",
        ],
        "overflows",
    ),
    "noise-jpeg-quality-0": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--noise", "jpeg:quality=0"],
        "whole number from 1 to 100",
    ),
    "noise-jpeg-quality-fraction": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--noise", "jpeg:quality=90.5"],
        "whole number from 1 to 100",
    ),
    "noise-quantize-bits-33": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--noise", "quantize:bits=33"],
        "whole number from 1 to 32",
    ),
    "noise-jpeg-wrong-param": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--noise", "jpeg:q=90"],
        "`quality=VALUE`",
    ),
    "noise-chain-bad-step": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--noise", "gaussian:sigma=0.1+salt:amount=1"],
        "`salt:amount=1` in",
    ),
    "noise-poisson-huge": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--noise", "poisson:peak=1e300"],
        "give a smaller peak",
    ),
    # analyze, roundtrip, compare, kernels show
    "shape-0": (["analyze", "-k", "box", "--shape", "0x4"], "--shape"),
    "shape-negative": (["analyze", "-k", "box", "--shape", "-4x4"], "--shape"),
    "shape-word": (["analyze", "-k", "box", "--shape", "big"], "--shape"),
    "analyze-noise-negative": (
        ["analyze", "-k", "box", "--shape", "8x8", "--noise-sigma", "-1"],
        "--noise-sigma",
    ),
    "analyze-noise-inf": (
        ["analyze", "-k", "box", "--shape", "8x8", "--noise-sigma", "inf"],
        "--noise-sigma",
    ),
    "analyze-bits-0": (["analyze", "-k", "box", "--shape", "8x8", "--bits", "0"], "--bits"),
    "roundtrip-bits-64": (["roundtrip", "{ws}/good.npy", "-k", "box", "--bits", "64"], "--bits"),
    "roundtrip-seed-negative": (
        ["roundtrip", "{ws}/good.npy", "-k", "box", "--seed", "-1"],
        "--seed",
    ),
    "roundtrip-method": (["roundtrip", "{ws}/good.npy", "-k", "box", "-m", "magic"], "magic"),
    "compare-range-0": (
        ["compare", "{ws}/good.npy", "{ws}/good.npy", "--data-range", "0"],
        "--data-range",
    ),
    "compare-range-nan": (
        ["compare", "{ws}/good.npy", "{ws}/good.npy", "--data-range", "nan"],
        "--data-range",
    ),
    "compare-border-negative": (
        ["compare", "{ws}/good.npy", "{ws}/good.npy", "--ignore-border", "-1"],
        "--ignore-border",
    ),
    "compare-border-everything": (
        ["compare", "{ws}/good.npy", "{ws}/good.npy", "--ignore-border", "8"],
        "leaves nothing",
    ),
    "compare-threshold-nan": (
        ["compare", "{ws}/good.npy", "{ws}/good.npy", "--min-psnr", "nan"],
        "--min-psnr",
    ),
    "compare-metric": (["compare", "{ws}/good.npy", "{ws}/good.npy", "-m", "psnr,foo"], "`foo`"),
    "compare-shapes": (["compare", "{ws}/good.npy", "{ws}/fourd.npy"], "4-D shape"),
    "precision-negative": (["kernels", "show", "box", "--precision", "-1"], "--precision"),
    "max-pixels-0": (
        ["--max-pixels", "0", "analyze", "-k", "box", "--shape", "8x8"],
        "--max-pixels",
    ),
    "max-pixels-word": (["--max-pixels", "lots", "kernels"], "--max-pixels"),
    # usage
    "dtype-unknown": (["convolve", "{ws}/good.npy", "-k", "box", "--dtype", "int8"], "--dtype"),
    "option-unknown": (["convolve", "{ws}/good.npy", "-k", "box", "--frobnicate"], "--frobnicate"),
    "kernel-missing": (["convolve", "{ws}/good.npy"], "Missing option '-k'"),
    "input-missing": (["convolve", "-k", "box"], "Missing argument"),
    "command-unknown": (["convolv", "{ws}/good.npy"], "No such command 'convolv'"),
    "seed-word": (["convolve", "{ws}/good.npy", "-k", "box", "--seed", "x"], "--seed"),
    "seed-negative-convolve": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--noise", "gaussian:sigma=0.1", "--seed", "-1"],
        "--seed",
    ),
    "dilation-overflow": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--dilation", "10000000000", "--mode", "full"],
        "--dilation",
    ),
    "padding-overflow": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--padding", "10000000000"],
        "--padding",
    ),
    "invert-noise-sigma-inf": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "wiener", "--noise-sigma", "inf"],
        "--noise-sigma",
    ),
    # conflicting options
    "padding-and-mode": (
        ["convolve", "{ws}/good.npy", "-k", "box", "--padding", "1", "--mode", "same"],
        "--padding",
    ),
    "option-not-for-method": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "wiener", "--reg", "0.1"],
        "does not apply",
    ),
    "unknown-boundary-with-stride": (
        ["invert", "{ws}/good.npy", "-k", "box", "--boundary", "unknown", "--stride", "2"],
        "unknown",
    ),
    "analyze-image-and-shape": (
        ["analyze", "{ws}/good.npy", "-k", "box", "--shape", "8x8"],
        "not both",
    ),
    "analyze-no-shape": (["analyze", "-k", "box"], "give an IMAGE or --shape"),
    "analyze-noise-and-bits": (
        ["analyze", "-k", "box", "--shape", "8x8", "--noise-sigma", "0.1", "--bits", "8"],
        "not both",
    ),
    "reference-shape": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "cgls", "--reference", "{ws}/nan.npy"],
        "NaN",
    ),
}


@pytest.mark.parametrize("argv,needle", OPTIONS.values(), ids=OPTIONS.keys())
def test_bad_option_is_refused(check, tmp_path, argv, needle):
    np.save(tmp_path / "zeros.npy", np.zeros((3, 3)))
    if argv[0] in ("convolve", "transpose", "invert"):
        argv = [*argv, "-o", "{out}"]
    check(argv, needle)


# --------------------------------------------------------------------------- output paths


def test_output_is_the_input(check):
    check(["convolve", "{ws}/good.npy", "-k", "box", "-o", "{ws}/good.npy", "--overwrite"], "input")


def test_output_is_the_input_by_another_spelling(check, ws):
    check(
        [
            "transpose",
            "{ws}/good.npy",
            "-k",
            "box",
            "-o",
            "{ws}/emptydir/../good.npy",
            "--overwrite",
        ],
        "input",
    )


def test_output_is_a_symlink_to_the_input(check, ws, tmp_path):
    (tmp_path / "link.npy").symlink_to(ws / "good.npy")
    check(["invert", "{ws}/good.npy", "-k", "box", "-o", "{tmp}/link.npy", "--overwrite"], "input")
    assert (tmp_path / "link.npy").is_symlink()


OTHER_INPUTS = {
    "kernel-file": (
        ["convolve", "{ws}/good.npy", "-k", "{ws}/kernel.npy", "-o", "{ws}/kernel.npy"],
        "is an input of this command",
    ),
    "reference": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "cgls", "-q"]
        + ["--reference", "{ws}/good.png", "-o", "{ws}/good.png"],
        "input",
    ),
    "history-over-input": (
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "cgls", "-q", "--history", "{ws}/good.npy"]
        + ["-o", "{tmp}/x.npy"],
        "is an input of this command",
    ),
    "spectrum-over-input": (
        ["analyze", "{ws}/good.png", "-k", "box", "--spectrum", "{ws}/good.png"],
        "input",
    ),
    "diff-over-input": (
        ["compare", "{ws}/good.npy", "{ws}/good.png", "--diff", "{ws}/good.png"],
        "input",
    ),
    "save-over-kernel": (
        ["kernels", "show", "{ws}/kernel.npy", "--save", "{ws}/kernel.npy"],
        "is an input of this command",
    ),
    "montage-over-input": (
        ["roundtrip", "{ws}/good.png", "-k", "box", "-m", "wiener", "--montage", "{ws}/good.png"],
        "input",
    ),
}


@pytest.mark.parametrize("argv,needle", OTHER_INPUTS.values(), ids=OTHER_INPUTS.keys())
def test_no_option_writes_over_an_input(check, argv, needle):
    check([*argv, "--overwrite"], needle)


def test_roundtrip_out_dir_never_replaces_its_input(check, tmp_path):
    np.save(tmp_path / "blurred.npy", np.random.default_rng(1).random((12, 12)))
    before = (tmp_path / "blurred.npy").read_bytes()
    check(
        ["roundtrip", "{tmp}/blurred.npy", "-k", "box", "-m", "wiener", "-q"]
        + ["--out-dir", "{tmp}", "--overwrite"],
        "is an input of this command",
    )
    assert (tmp_path / "blurred.npy").read_bytes() == before


EXISTING = {
    "convolve": ["convolve", "{ws}/good.npy", "-k", "box", "-o", "{tmp}/exists.npy"],
    "transpose": ["transpose", "{ws}/good.npy", "-k", "box", "-o", "{tmp}/exists.npy"],
    "invert": ["invert", "{ws}/good.npy", "-k", "box", "-o", "{tmp}/exists.npy"],
    "analyze-spectrum": ["analyze", "{ws}/good.npy", "-k", "box", "--spectrum", "{tmp}/e.png"],
    "compare-diff": ["compare", "{ws}/good.npy", "{ws}/good.npy", "--diff", "{tmp}/e.png"],
    "kernels-save": ["kernels", "show", "box", "--save", "{tmp}/exists.npy"],
    "roundtrip-montage": ["roundtrip", "{ws}/good.npy", "-k", "box", "--montage", "{tmp}/e.png"],
    "roundtrip-out-dir": [
        "roundtrip",
        "{ws}/good.npy",
        "-k",
        "box",
        "-m",
        "wiener",
        "--out-dir",
        "{tmp}",
    ],
}


@pytest.mark.parametrize("argv", EXISTING.values(), ids=EXISTING.keys())
def test_existing_output_needs_overwrite(check, tmp_path, argv):
    np.save(tmp_path / "exists.npy", np.arange(4.0))
    iio.imwrite(tmp_path / "e.png", np.zeros((4, 4), np.uint8))
    np.save(tmp_path / "wiener.npy", np.arange(3.0))
    before = digests(tmp_path)
    check(argv, "--overwrite")
    assert digests(tmp_path) == before


def test_history_is_checked_before_the_work(check, tmp_path):
    (tmp_path / "h.csv").write_text("old\n")
    check(
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "cgls", "-q", "--history", "{tmp}/h.csv"]
        + ["-o", "{out}"],
        "--overwrite",
    )
    assert (tmp_path / "h.csv").read_text() == "old\n"


def test_history_clash_is_refused_before_the_work(check):
    check(
        ["invert", "{ws}/good.npy", "-k", "box", "-m", "cgls", "-q", "--history", "{out}"]
        + ["-o", "{out}", "--overwrite"],
        "--history",
    )


OUTPUT_PATHS = {
    "unknown-extension": (["-o", "{tmp}/y.xyz"], "unknown output format `.xyz`"),
    "parent-is-a-file": (["-o", "{ws}/good.png/y.npy"], "good.png"),
    "too-many-channels-for-png": (
        ["-k", "{tmp}/bank5.npy", "-o", "{tmp}/y.png"],
        "PNG holds 1, 2, 3, 4 channels, not 5; write .npy instead",
    ),
    "two-channels-for-jpeg": (
        ["-k", "{tmp}/bank2.npy", "-o", "{tmp}/y.jpg"],
        "JPEG holds 1, 3 channels, not 2; write .tif or .npy instead",
    ),
}


@pytest.mark.parametrize("argv,needle", OUTPUT_PATHS.values(), ids=OUTPUT_PATHS.keys())
def test_bad_output_path(check, ws, tmp_path, argv, needle):
    """A kernel bank's output channels the format cannot hold: the suggested formats can."""
    for n in (2, 5):
        np.save(tmp_path / f"bank{n}.npy", np.ones((n, 1, 3, 3)))
    kernel = [] if "-k" in argv else ["-k", "box"]
    check(["convolve", "{ws}/good.npy", *kernel, *argv], needle)
    assert not (tmp_path / "y.png").exists() and not (tmp_path / "y.xyz").exists()
    if "channels" in needle:  # the advice holds: the first format suggested takes the result
        suggested = needle.split("write ")[1].split()[0]
        kernel = argv[1].format(tmp=tmp_path)
        run_ok("convolve", ws / "good.npy", "-k", kernel, "-o", tmp_path / f"y{suggested}")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes in any directory"
)
def test_unwritable_output_directory(ws, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        argv = ["convolve", ws / "good.npy", "-k", "box", "-o", locked / "y.npy"]
        done = run_real(*argv)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("deconv: error: ") and done.stderr.count("\n") == 1
        assert "Permission denied" in done.stderr and str(locked) in done.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_unwritable_output_directory_simulated(check, monkeypatch):
    """As root every directory is writable: the refusal of the OS is simulated."""
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):  # creating the temporary file
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    message = check(["convolve", "{ws}/good.npy", "-k", "box", "-o", "{out}"], "permission denied")
    assert "cannot write in" in message


# --------------------------------------------------------------------------- accepted cases


def run_ok(*args):
    result = invoke(*args)
    assert result.exception is None, repr(result.exception)
    assert result.exit_code == 0, result.output
    return result


def test_1x1_image_with_a_1x1_kernel_is_copied(tmp_path):
    np.save(tmp_path / "px.npy", np.array([[0.25]]))
    for command in ("convolve", "transpose", "invert"):
        out = tmp_path / f"{command}.npy"
        run_ok(command, tmp_path / "px.npy", "-k", "identity", "-o", out, "-q")
        np.testing.assert_allclose(np.load(out), [[0.25]], rtol=1e-12)


def test_1x1_image_with_a_larger_kernel_follows_the_boundary_rule(tmp_path):
    np.save(tmp_path / "px.npy", np.array([[0.25]]))
    run_ok("convolve", tmp_path / "px.npy", "-k", "box:size=3", "-o", tmp_path / "y.npy", "-q")
    expected = ndimage.convolve(np.array([[0.25]]), np.full((3, 3), 1 / 9), mode="reflect")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-12)


@pytest.mark.parametrize("shape", [(1, 9), (9, 1)], ids=["1xN", "Nx1"])
def test_one_pixel_wide_images(tmp_path, shape):
    x = np.random.default_rng(4).random(shape)
    np.save(tmp_path / "x.npy", x)
    run_ok("convolve", tmp_path / "x.npy", "-k", "box:size=3", "-o", tmp_path / "y.npy", "-q")
    expected = ndimage.convolve(x, np.full((3, 3), 1 / 9), mode="reflect")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-12)
    result = run_ok("analyze", tmp_path / "x.npy", "-k", "box:size=3", "-f", "json")
    assert '"verdict"' in result.stdout


def test_bool_image_is_read_as_0_and_1(tmp_path):
    x = np.random.default_rng(5).random((10, 12)) > 0.5
    np.save(tmp_path / "mask.npy", x)
    run_ok("convolve", tmp_path / "mask.npy", "-k", "box:size=3", "-o", tmp_path / "y.npy", "-q")
    expected = ndimage.convolve(x.astype(float), np.full((3, 3), 1 / 9), mode="reflect")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-12)


AMBIGUOUS = {  # a 3-D array whose last axis is no image's channel count: refused, not guessed
    "stack": ((16, 64, 64), "a 3-D array of shape 16×64×64 is ambiguous"),
    "channels-first": ((3, 64, 64), "a 3-D array of shape 3×64×64 is ambiguous"),
    "five-channels": ((8, 9, 5), "a 3-D array of shape 8×9×5 is ambiguous"),
}


@pytest.mark.parametrize("command", ["convolve", "transpose", "invert", "analyze", "roundtrip"])
@pytest.mark.parametrize("shape,needle", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_ambiguous_3d_array_is_refused(check, tmp_path, command, shape, needle):
    np.save(tmp_path / "x.npy", np.random.default_rng(6).random(shape))
    argv = [command, "{tmp}/x.npy", "-k", "box:size=3"]
    argv += ["-o", "{out}"] if command in ("convolve", "transpose", "invert") else []
    message = check(argv, needle)
    assert "at most 4 channels" in message and "--axes" in message


def test_five_channel_tiff_is_refused(check, tmp_path):
    five = (np.random.default_rng(6).random((8, 9, 5)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", five, photometric="minisblack", planarconfig="contig")
    message = check(["convolve", "{tmp}/x.tif", "-k", "box", "-o", "{out}"], "has 5 channels")
    assert "images have at most 4" in message


def test_five_channel_feature_maps_of_a_bank_are_processed(tmp_path):
    """A kernel bank names the channel count: its 5-channel output is data, not an image."""
    bank = np.random.default_rng(5).random((5, 1, 3, 3))
    np.save(tmp_path / "bank.npy", bank)
    x = np.random.default_rng(6).random((8, 9))
    np.save(tmp_path / "x.npy", x)
    run_ok("convolve", tmp_path / "x.npy", "-k", tmp_path / "bank.npy", "-o", tmp_path / "y.npy")
    expected = np.stack([ndimage.convolve(x, k[0], mode="reflect") for k in bank], axis=-1)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-12)
    args = ["-k", tmp_path / "bank.npy", "-o", tmp_path / "z.npy"]
    run_ok("transpose", tmp_path / "y.npy", *args)
    assert np.load(tmp_path / "z.npy").shape == (8, 9)
    result = run_ok(
        "compare", tmp_path / "y.npy", tmp_path / "y.npy", "-f", "json", "--data-range", "5"
    )
    assert '"psnr"' in result.stdout


@pytest.mark.parametrize("mode", ["same", "full"])
def test_kernel_larger_than_the_image(tmp_path, mode):
    x = np.random.default_rng(7).random((6, 5))
    np.save(tmp_path / "x.npy", x)
    run_ok(
        "convolve", tmp_path / "x.npy", "-k", "box:size=9", "--boundary", "constant",
        "--mode", mode, "-o", tmp_path / "y.npy", "-q",
    )  # fmt: skip
    expected = (
        ndimage.convolve(x, np.full((9, 9), 1 / 81), mode="constant")
        if mode == "same"
        else __import__("scipy.signal", fromlist=["convolve2d"]).convolve2d(
            x, np.full((9, 9), 1 / 81)
        )
    )
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-10, atol=1e-15)


def test_single_channel_image_with_a_one_channel_bank(tmp_path):
    """H×W×1 data and a (C_out, 1, kh, kw) bank: the size-one channel axis is dropped."""
    np.save(tmp_path / "x.npy", np.random.default_rng(9).random((8, 8, 1)))
    np.save(tmp_path / "bank.npy", np.full((1, 1, 3, 3), 1 / 9))
    result = run_ok("roundtrip", tmp_path / "x.npy", "-k", tmp_path / "bank.npy", "-f", "json")
    rows = {row["method"]: row for row in __import__("json").loads(result.stdout)["rows"]}
    assert rows["tikhonov"]["psnr"] > rows["transpose"]["psnr"]


@pytest.mark.parametrize(
    "value,shape,ext",
    [(0.25, (8, 8), ".npy"), (0.0, (1, 1), ".npy"), (0, (6, 5, 3), ".png")],
    ids=["grey-8x8", "black-1x1", "black-rgb-png"],
)
def test_constant_image_inverts_to_itself(tmp_path, value, shape, ext):
    """A constant image shows no noise (σ = 0, not NaN): `auto` inverts it exactly.

    With a blur that sums to 1 and the reflect boundary, A c = c for a constant c.
    """
    x = np.full(shape, value)
    if ext == ".png":
        iio.imwrite(tmp_path / "x.png", x.astype(np.uint8))
    else:
        np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    result = run_ok("invert", tmp_path / f"x{ext}", "-k", "gaussian:sigma=1", "-o", out)
    assert "deconv: warning" not in result.stderr
    np.testing.assert_allclose(np.load(out), x / (255 if ext == ".png" else 1), atol=1e-9)


def test_tikhonov_cg_converging_exactly_with_tol_0(tmp_path):
    y = np.array([[0.63696169, 0.26978671], [0.04097352, 0.01652764], [0.81327024, 0.91275558]])
    np.save(tmp_path / "y.npy", y)
    run_ok(
        "invert", tmp_path / "y.npy", "-k", "box", "--boundary", "constant",
        "-m", "tikhonov", "--tol", "0", "-o", tmp_path / "x.npy", "-q",
    )  # fmt: skip
    assert np.isfinite(np.load(tmp_path / "x.npy")).all()


def test_integer_kernel_file_is_used_as_stored(tmp_path):
    x = np.random.default_rng(8).random((10, 10))
    k = np.array([[0, 1, 0], [1, 2, 1], [0, 1, 0]], dtype=np.uint32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "k.npy", k)
    run_ok("convolve", tmp_path / "x.npy", "-k", tmp_path / "k.npy", "-o", tmp_path / "y.npy", "-q")
    expected = ndimage.convolve(x, k.astype(float), mode="reflect")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-12)


# --------------------------------------------------------------------------- decompression bombs


def _zeros_zlib(total: int, block: int) -> bytes:
    """A zlib stream of ``total`` zero bytes, built from one compressed block repeated.

    Each block ends with a full flush, so identical blocks compress to identical
    bytes that can be concatenated; the Adler-32 of n zeros is ``(n mod 65521) << 16 | 1``.
    """
    if total % block:
        raise ValueError("block must divide total")
    zero = b"\x00" * block
    c = zlib.compressobj(9)
    first = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    middle = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    final_empty_block = b"\x03\x00"
    adler = ((total % 65521) << 16) | 1
    return first + middle * (total // block - 1) + final_empty_block + struct.pack(">I", adler)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int, height: int, bit_depth: int = 8) -> None:
    """A grey PNG of zeros: tiny on disk, ``width × height`` pixels decoded."""
    row = 1 + (width * bit_depth + 7) // 8
    rows_per_block = next(n for n in (1000, 500, 250, 200, 100, 50, 10, 1) if height % n == 0)
    data = _zeros_zlib(row * height, row * rows_per_block)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def tiff_bomb(path: Path, width: int, height: int) -> None:
    """A deflate-compressed 8-bit grey TIFF of zeros, one strip."""
    rows_per_block = next(n for n in (1000, 500, 250, 200, 100, 50, 10, 1) if height % n == 0)
    data = _zeros_zlib(width * height, width * rows_per_block)
    tags = [  # (tag, type, count, value): SHORT = 3, LONG = 4
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 8),  # Adobe deflate
        (262, 3, 1, 1),  # min-is-black
        (273, 4, 1, 8),  # the strip starts right after the header
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, len(data)),
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(data)) + data + ifd)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    png_bomb(root / "bomb.png", 20000, 20000)
    png_bomb(root / "bomb1bit.png", 50000, 50000, bit_depth=1)
    tiff_bomb(root / "bomb.tif", 20000, 20000)
    return {p.name: p for p in root.iterdir()}


def test_bomb_files_are_real(bombs):
    """Small on disk; their headers declare what zlib would really inflate them to."""
    assert all(p.stat().st_size < 500_000 for p in bombs.values())
    tiny = bombs["bomb.png"].parent / "small.png"
    png_bomb(tiny, 300, 200)
    np.testing.assert_array_equal(iio.imread(tiny), np.zeros((200, 300), np.uint8))
    tiny_tif = bombs["bomb.png"].parent / "small.tif"
    tiff_bomb(tiny_tif, 300, 200)
    np.testing.assert_array_equal(tifffile.imread(tiny_tif), np.zeros((200, 300), np.uint8))


@pytest.mark.parametrize(
    "name,pixels",
    [("bomb.png", "400,000,000"), ("bomb1bit.png", "2,500,000,000"), ("bomb.tif", "400,000,000")],
    ids=["png-8bit", "png-1bit", "tiff-deflate"],
)
@pytest.mark.parametrize("command", ["convolve", "analyze", "compare", "kernel"])
def test_decompression_bomb_is_refused_from_its_header(bombs, tmp_path, name, pixels, command):
    bomb = bombs[name]
    argv = {
        "convolve": ["convolve", bomb, "-k", "box", "-o", tmp_path / "y.npy"],
        "analyze": ["analyze", bomb, "-k", "box"],
        "compare": ["compare", bomb, bomb],
        "kernel": ["kernels", "show", bomb],
    }[command]
    message = assert_refused(invoke(*argv), f"has {pixels} pixels")
    assert "--max-pixels" in message and "DECONV_MAX_PIXELS" in message
    assert "above the limit of 268,435,456" in message


def test_bomb_costs_no_memory(bombs, tmp_path):
    """A real process refusing the bomb stays small (decoding it would take 400 MB+)."""
    # VmHWM is this process's own peak; ru_maxrss would start from the forking parent's
    # RSS (a pytest worker that has run large tests).
    code = (
        "import sys\n"
        "from deconv_cli.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "sys.stderr.write(f'maxrss {peak.split()[1]}\\n')\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "convolve", str(bombs["bomb.png"]), "-k", "box"]
        + ["-o", str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    error, rss = done.stderr.splitlines()
    assert error.startswith("deconv: error: ") and "400,000,000 pixels" in error
    assert int(rss.split()[1]) < 300_000  # kB: far below the 400 MB the pixels would take


def test_max_pixels_flag_lowers_and_raises_the_limit(ws, monkeypatch):
    monkeypatch.delenv("DECONV_MAX_PIXELS", raising=False)
    message = assert_refused(
        invoke("--max-pixels", "255", "analyze", ws / "good.png", "-k", "box"), "256 pixels"
    )
    assert "above the limit of 255" in message
    assert invoke("--max-pixels", "256", "analyze", ws / "good.png", "-k", "box").exit_code == 0
    monkeypatch.setenv("DECONV_MAX_PIXELS", "100")
    assert_refused(invoke("analyze", ws / "good.png", "-k", "box"), "above the limit of 100")
    assert invoke("--max-pixels", "1000", "analyze", ws / "good.png", "-k", "box").exit_code == 0
    assert os.environ["DECONV_MAX_PIXELS"] == "100"  # the flag lasts one command


# --------------------------------------------------------------------------- the real thing


def run_real(*args, user=None, cwd=None, env=None):
    """``python -m deconv_cli ARGS`` in a subprocess: the real stdout and stderr."""
    environment = {k: v for k, v in os.environ.items() if k != "DECONV_DEBUG"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "deconv_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        user=user,
        cwd=cwd,
        env=environment,
    )


REAL = {
    "missing-file": (["convolve", "{ws}/missing.png", "-k", "box", "-o", "{tmp}/y.png"], "no such"),
    "pickled-npy": (["convolve", "{ws}/pickled.npy", "-k", "box", "-o", "{tmp}/y.npy"], "pickled"),
    "pickled-kernel": (
        ["convolve", "{ws}/good.npy", "-k", "{ws}/rawpickle.npy", "-o", "{tmp}/y.npy"],
        "pickled",
    ),
    "corrupt-tiff": (["analyze", "{ws}/corrupt.tif", "-k", "box"], "corrupt TIFF"),
    "unknown-option": (["roundtrip", "{ws}/good.npy", "-k", "box", "--frob"], "--frob"),
    "bad-kernel": (["kernels", "show", "gaussian:sigma=-2"], "sigma"),
    "output-is-input": (
        ["invert", "{ws}/good.png", "-k", "box", "-o", "{ws}/good.png", "--overwrite"],
        "input",
    ),
}


@pytest.mark.parametrize("argv,needle", REAL.values(), ids=REAL.keys())
def test_real_stderr_is_one_line(ws, tmp_path, argv, needle):
    before = digests(ws)
    done = run_real(*(a.format(ws=ws, tmp=tmp_path) for a in argv))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("deconv: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and needle in done.stderr
    assert digests(ws) == before
    assert not (ws / MARKER).exists()
    assert list(tmp_path.iterdir()) == []


def test_real_internal_error_is_one_line_with_exit_3(tmp_path):
    """A bug is reported on one line too; DECONV_DEBUG=1 gives the traceback."""
    code = (
        "import sys\n"
        "import deconv_cli.kernels as k\n"
        "def broken(*a, **kw):\n"
        "    raise RuntimeError('simulated bug')\n"
        "k.load_kernel = broken\n"
        "from deconv_cli.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    argv = [sys.executable, "-c", code, "kernels", "show", "box"]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**os.environ, "DECONV_DEBUG": ""}
    )
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("deconv: internal error: RuntimeError: simulated bug")
    debug = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**os.environ, "DECONV_DEBUG": "1"}
    )
    assert "Traceback" in debug.stderr and debug.returncode == 1


def test_fifo_is_never_opened(ws):
    """Opening a FIFO with no writer would block forever: the check happens before."""
    assert stat.S_ISFIFO(os.stat(ws / "pipe.png").st_mode)
    done = run_real("analyze", ws / "pipe.png", "-k", "box")
    assert done.returncode == 2 and "not a regular file" in done.stderr


def test_real_warnings_are_one_line_each():
    """A Python warning prints as `deconv: warning: MESSAGE (Category, file:line)`, once."""
    code = (
        "import sys, warnings\n"
        "import deconv_cli.kernels as k\n"
        "real = k.load_kernel\n"
        "def noisy(*a, **kw):\n"
        "    for _ in range(3):\n"
        "        warnings.warn('something odd\\n  happened', RuntimeWarning)\n"
        "    return real(*a, **kw)\n"
        "k.load_kernel = noisy\n"
        "from deconv_cli.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "kernels", "show", "box"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "deconv: warning: something odd happened (RuntimeWarning, <string>:6)"
    ]


@pytest.mark.parametrize("ext", [".jpg", ".bmp"])
def test_alpha_dropped_into_a_format_without_alpha_is_noted(tmp_path, ext):
    rgba = (np.random.default_rng(8).random((8, 8, 4)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "x.png", rgba)
    result = run_ok("convolve", tmp_path / "x.png", "-k", "box", "-o", tmp_path / f"y{ext}")
    assert f"alpha: dropped ({ext} has no alpha channel)" in result.stderr
    assert iio.imread(tmp_path / f"y{ext}").shape == (8, 8, 3)
