"""Fuzzing: random images, kernels, geometry flags and methods through every command.

Every run must end in one of two ways: success with a valid, readable output of
the expected shape (the shape rules of DESIGN.md, computed here independently),
or exit 2 with one line ``deconv: error: ...`` on stderr. Anything else (another
exception, a traceback, exit 1 or 3) is a bug. A second family corrupts the bytes
of real image files (bit flips, truncation, insertion, deletion) and feeds them to
the image and kernel readers: a valid image/kernel or a one-line InputError /
KernelError, never another exception, never a hang.

The budget comes from the hypothesis profile (tests/conftest.py): ``ci`` runs a
small derandomized number of examples per property; ``fuzz`` (``make fuzz``) runs
many random ones.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from deconv_cli.cli import main
from deconv_cli.errors import InputError, KernelError
from deconv_cli.restore import methods

pytestmark = pytest.mark.fuzz

FUZZING = os.environ.get("HYPOTHESIS_PROFILE", "ci") != "ci"
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
HANG_SECONDS = 120
METHODS = methods()


def budget(ci_examples: int):
    """The ci profile's small per-property budget; the fuzz profile's own otherwise."""
    return settings() if FUZZING else settings(max_examples=ci_examples)


class Hang(Exception):
    """A single example ran for longer than HANG_SECONDS."""


@contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    def expire(signum, frame):
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke(argv):
    """Run the CLI; with DECONV_DEBUG=1 a bug surfaces as its own exception."""
    argv = [str(a) for a in argv]
    note(f"deconv {' '.join(argv)}")
    with no_hang():
        result = CliRunner().invoke(main, argv, env={"DECONV_DEBUG": "1"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"deconv {' '.join(argv)} raised") from result.exception
    note(f"exit {result.exit_code}: {result.stderr[-500:]}")
    event(f"{argv[0]}: {outcome(result)}")
    for line in result.stderr.splitlines():
        if line.startswith("deconv: warning: "):  # accepted, but counted for the report
            event(f"{argv[0]}: {re.sub(r'[0-9.]+e?-?[0-9]*', 'X', line)[:100]}")
        assert "Traceback" not in line
    return result


def outcome(result) -> str:
    """``exit 0``, or the exit code and the start of the message with values masked."""
    if result.exit_code == 0:
        return "exit 0"
    masked = re.sub(r"`[^`]*`|[0-9.]+", "X", result.stderr.removeprefix("deconv: error: "))
    return f"exit {result.exit_code}: {masked[:60]}"


def assert_clean_failure(result) -> None:
    """Exit 2 and one error line (after warnings, if the computation had started)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    *before, last = result.stderr.splitlines() or [""]
    assert last.startswith("deconv: error: "), result.stderr
    assert all(line.startswith("deconv: warning: ") for line in before), result.stderr
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- strategies

BAD_NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e10", "1e309", "abc", "", "2.5"]


def _num(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False).map(lambda v: f"{v:.3g}")


def chance(percent: int):
    """True ``percent`` % of the time.

    Hypothesis favours the ends of an integer range (0 and its maximum); both map
    to False here, so that a rare branch stays rare.
    """
    return st.integers(0, 10**6).map(lambda n: n % 100 >= 100 - percent)


def mostly(valid, invalid, percent_invalid: int = 8):
    """``valid``, except ``percent_invalid`` % of the time one of the ``invalid`` values.

    Invalid inputs must be refused cleanly, but most runs must be valid so that the
    computations, not only the parsers, are fuzzed.
    """
    bad = st.sampled_from(invalid) if isinstance(invalid, list) else invalid
    return chance(percent_invalid).flatmap(lambda invalid_now: bad if invalid_now else valid)


def _value(valid):
    return mostly(valid, BAD_NUMBERS, 10)


_SIZE = st.one_of(
    st.integers(1, 9).map(str),
    st.tuples(st.integers(1, 7), st.integers(1, 7)).map(lambda p: f"{p[0]}x{p[1]}"),
)
FAMILY_PARAMS = {
    "gaussian": {
        "sigma": _num(0.2, 4),
        "size": _SIZE,
        "sigma_y": _num(0.2, 4),
        "angle": _num(-720, 720),
    },
    "box": {"size": _SIZE},
    "disk": {"radius": _num(0.1, 5)},
    "motion": {"length": _num(0.1, 12), "angle": _num(-360, 360)},
    "laplacian": {"neighbors": st.sampled_from(["4", "8", "6"])},
    "identity": {"size": st.sampled_from(["1", "3", "5", "3x5", "2", "4x3"])},
}


@st.composite
def named_kernel(draw) -> str:
    family = draw(mostly(st.sampled_from(sorted(FAMILY_PARAMS)), ["gausian", "blur", ""], 5))
    params = FAMILY_PARAMS.get(family, {"x": _num(0, 1)})
    chosen = draw(st.lists(st.sampled_from(sorted(params)), unique=True, max_size=len(params)))
    parts = [f"{name}={draw(_value(params[name]))}" for name in chosen]
    if draw(chance(4)):
        parts.append(draw(st.sampled_from(["radius=2", "sigma", "=3", "size=3"])))
    return family + (":" + ",".join(parts) if parts else draw(st.sampled_from(["", ":"])))


@st.composite
def kernel_array(draw) -> np.ndarray:
    kind = draw(
        mostly(st.sampled_from(["2d", "2d", "2d", "bank", "bool"]), ["zeros", "nan", "inf"])
    )
    if kind == "bank":
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    else:
        shape = ()
    shape += (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    seed = draw(st.integers(0, 2**16))
    array = np.random.default_rng(seed).uniform(-1, 2, size=shape)
    if kind == "zeros":
        array[...] = 0
    elif kind in ("nan", "inf"):
        array.flat[draw(st.integers(0, array.size - 1))] = np.nan if kind == "nan" else np.inf
    elif kind == "bool":
        array = array > 0.5
    return array


@dataclass
class Case:
    """One generated run: files to create and the argv, plus what the oracle needs."""

    image: np.ndarray
    image_ext: str
    kernel: str | np.ndarray
    kernel_ext: str
    flags: dict[str, str | None]
    correlate: bool
    output_ext: str


@st.composite
def image_array(draw, max_side: int = 12) -> tuple[np.ndarray, str]:
    """A small image and the extension to store it with."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    channels = draw(st.sampled_from([None, None, 1, 3, 5]))
    shape = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["f64", "f64", "f32", "u8", "u16", "bool", "wide"]))
    ext = ".npy"
    if kind == "f64":
        array = rng.random(shape)
    elif kind == "wide":
        array = rng.uniform(-3, 3, shape)
    elif kind == "f32":
        array = rng.random(shape).astype(np.float32)
        if channels in (None, 3):
            ext = draw(st.sampled_from([".npy", ".tif"]))
    elif kind == "u8":
        array = rng.integers(0, 256, shape).astype(np.uint8)
        if channels in (None, 3):
            ext = draw(st.sampled_from([".npy", ".png"]))
    elif kind == "u16":
        array = rng.integers(0, 65536, shape).astype(np.uint16)
        if channels is None:
            ext = draw(st.sampled_from([".npy", ".png", ".tif"]))
        elif channels == 3:
            ext = draw(st.sampled_from([".npy", ".tif"]))
    else:
        array = rng.random(shape) > 0.5
    return array, ext


def geometry_flags(draw, *, transpose: bool, invert: bool) -> tuple[dict, bool]:
    padding = draw(mostly(st.sampled_from([None] * 6 + ["0", "1", "3", "1x2"]), ["-1", "a"], 3))
    modes = [None, "same", "full", "valid"] if padding is None else [None] * 9 + ["same"]
    boundaries = ["constant", "reflect", "mirror", "nearest", "wrap", "zero", "edge", "periodic"]
    flags = {
        "--mode": draw(mostly(st.sampled_from(modes), ["diagonal"], 3)),
        "--boundary": draw(
            mostly(
                st.sampled_from([None, *boundaries] + (["unknown"] * 2 if invert else [])),
                ["bogus"],
                3,
            )
        ),
        "--stride": draw(
            mostly(st.sampled_from([None, None, "1", "2", "3", "2x1"]), ["0", "x"], 3)
        ),
        "--dilation": draw(mostly(st.sampled_from([None, None, "1", "2", "1x2"]), ["0"], 3)),
        "--padding": padding,
    }
    if transpose or invert:
        shapes = st.tuples(st.integers(1, 20), st.integers(1, 20)).map(lambda p: f"{p[0]}x{p[1]}")
        flags["--output-shape"] = draw(mostly(st.none(), mostly(shapes, ["0x3", "abc"], 15), 20))
    return flags, draw(st.booleans())


@st.composite
def processing_case(draw, *, transpose=False, invert=False) -> Case:
    image, image_ext = draw(image_array())
    if draw(st.booleans()):
        kernel, kernel_ext = draw(named_kernel()), ""
    else:
        kernel = draw(kernel_array())
        if kernel.ndim == 4 and draw(chance(75)):  # mostly a bank that fits the image
            channels = image.shape[2] if image.ndim == 3 else 1
            kernel = np.resize(kernel, (kernel.shape[0], channels, *kernel.shape[2:]))
        kernel_ext = draw(st.sampled_from([".npy", ".npy", ".csv"])) if kernel.ndim == 2 else ".npy"
    flags, correlate = geometry_flags(draw, transpose=transpose, invert=invert)
    output_ext = draw(st.sampled_from([".npy", ".npy", ".npy", ".tif", ".png"]))
    return Case(image, image_ext, kernel, kernel_ext, flags, correlate, output_ext)


# --------------------------------------------------------------------------- the shape oracle


def _parse_pair(text: str | None, minimum: int, default):
    if text is None:
        return default
    try:
        numbers = [int(p) for p in text.split("x")]
    except ValueError:
        return None
    if len(numbers) == 1:
        numbers *= 2
    return tuple(numbers) if len(numbers) == 2 and min(numbers) >= minimum else None


@dataclass
class Geometry:
    mode: str
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int] | None


def parse_geometry(flags: dict) -> Geometry | None:
    """The geometry the flags describe per DESIGN.md, or None if they are invalid."""
    stride = _parse_pair(flags.get("--stride"), 1, (1, 1))
    dilation = _parse_pair(flags.get("--dilation"), 1, (1, 1))
    padding = _parse_pair(flags.get("--padding"), 0, None) if flags.get("--padding") else None
    mode = flags.get("--mode")
    if stride is None or dilation is None or (flags.get("--padding") and padding is None):
        return None
    if padding is not None and mode is not None:
        return None
    mode = "valid" if padding is not None else (mode or "same")
    if mode not in ("same", "full", "valid"):
        return None
    if flags.get("--boundary") == "bogus":
        return None
    return Geometry(mode, stride, dilation, padding)


def _pads_total(geometry: Geometry, axis: int, extent: int) -> int:
    if geometry.padding is not None:
        return 2 * geometry.padding[axis]
    return {"same": extent - 1, "full": 2 * (extent - 1), "valid": 0}[geometry.mode]


def forward_shape(image_shape, kernel_shape, geometry: Geometry):
    """Output shape of A per DESIGN.md, or None where A has no output (or channels clash)."""
    spatial = []
    for axis in (0, 1):
        extent = geometry.dilation[axis] * (kernel_shape[-2 + axis] - 1) + 1
        length = image_shape[axis] + _pads_total(geometry, axis, extent) - extent + 1
        if length < 1:
            return None
        spatial.append(math.ceil(length / geometry.stride[axis]))
    if len(kernel_shape) == 4:
        c_out, c_in = kernel_shape[:2]
        channels = image_shape[2] if len(image_shape) == 3 else 1
        if channels != c_in:
            return None
        return tuple(spatial) + ((c_out,) if c_out > 1 else ())
    return tuple(spatial) + tuple(image_shape[2:])


def adjoint_shape(data_shape, kernel_shape, geometry: Geometry, requested):
    """Shape of Aᵀy: the smallest image A maps to ``data_shape``, or ``requested``."""
    spatial = []
    for axis in (0, 1):
        extent = geometry.dilation[axis] * (kernel_shape[-2 + axis] - 1) + 1
        s = geometry.stride[axis]
        lowest = s * (data_shape[axis] - 1) + 1 + extent - 1 - _pads_total(geometry, axis, extent)
        candidates = range(max(lowest, 1), lowest + s)
        if requested is None:
            if not candidates:
                return None
            spatial.append(candidates[0])
        elif requested[axis] in candidates:
            spatial.append(requested[axis])
        else:
            return None
    if len(kernel_shape) == 4:
        c_out, c_in = kernel_shape[:2]
        channels = data_shape[2] if len(data_shape) == 3 else 1
        if channels != c_out:
            return None
        return tuple(spatial) + ((c_in,) if c_in > 1 else ())
    return tuple(spatial) + tuple(data_shape[2:])


def read_back(path: Path) -> np.ndarray:
    """Read an output with the formats' own libraries, not deconv's reader."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".tif":
        return tifffile.imread(path)
    return iio.imread(path)


def same_pixels_shape(written: tuple, expected: tuple) -> bool:
    """PNG and TIFF drop a single channel axis."""

    def squeeze(shape):
        return shape[:2] if len(shape) == 3 and shape[2] == 1 else shape

    return squeeze(tuple(written)) == squeeze(tuple(expected))


# --------------------------------------------------------------------------- files


def write_case_files(case: Case, root: Path) -> tuple[Path, str]:
    image = root / f"image{case.image_ext}"
    if case.image_ext == ".npy":
        np.save(image, case.image)
    elif case.image_ext == ".tif":
        tifffile.imwrite(image, case.image, photometric="rgb" if case.image.ndim == 3 else None)
    else:
        iio.imwrite(image, case.image)
    if isinstance(case.kernel, str):
        return image, case.kernel
    kernel = root / f"kernel{case.kernel_ext}"
    if case.kernel_ext == ".npy":
        np.save(kernel, case.kernel)
    else:
        np.savetxt(kernel, case.kernel.astype(float), delimiter=",")
    return image, str(kernel)


def geometry_argv(case: Case) -> list[str]:
    argv = [item for key, value in case.flags.items() if value is not None for item in (key, value)]
    return argv + (["--correlate"] if case.correlate else [])


def kernel_shape_of(case: Case) -> tuple[int, ...] | None:
    """The kernel's shape: arrays directly; named specs from `deconv kernels show`."""
    if not isinstance(case.kernel, str):
        return case.kernel.shape if case.kernel.ndim != 1 else (1, case.kernel.size)
    shown = CliRunner().invoke(main, ["kernels", "show", case.kernel])
    if shown.exit_code != 0:
        return None
    first = shown.stdout.splitlines()[0]
    return tuple(int(n) for n in first.rsplit("shape ", 1)[1].split("x"))


def check_processing(case: Case, command: str, extra: list[str] = ()) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image, kernel = write_case_files(case, root)
        out = root / f"out{case.output_ext}"
        argv = [command, image, "-k", kernel, *geometry_argv(case), *extra, "-o", out, "-q"]
        result = invoke(argv)
        leftovers = [p.name for p in root.iterdir() if p.name.startswith(".deconv")]
        assert leftovers == []
        geometry = parse_geometry(case.flags)
        kernel_shape = kernel_shape_of(case)
        expected = None
        if geometry is not None and kernel_shape is not None:
            shape = case.image.shape
            requested = _parse_pair(case.flags.get("--output-shape"), 1, None)
            if command == "convolve":
                expected = forward_shape(shape, kernel_shape, geometry)
            elif case.flags.get("--boundary") != "unknown":
                expected = adjoint_shape(shape, kernel_shape, geometry, requested)
        if result.exit_code != 0:
            assert_clean_failure(result)
            assert not out.exists()
            return
        for line in result.stderr.splitlines():  # -q: nothing but warnings and clipping
            assert line.startswith("deconv: warning: ") or "clipped" in line or "dropped" in line
        assert geometry is not None and kernel_shape is not None, "accepted invalid flags"
        written = read_back(out)
        if expected is not None:
            assert same_pixels_shape(written.shape, expected), (written.shape, expected)
        elif case.flags.get("--boundary") == "unknown":
            assert same_pixels_shape(written.shape, case.image.shape)
        else:
            raise AssertionError(f"succeeded where A has no such shape: {written.shape}")
        assert np.isfinite(written).all()


# --------------------------------------------------------------------------- the commands


@budget(60)
@given(processing_case())
def test_fuzz_convolve(case):
    noise = []
    if not isinstance(case.kernel, str) and case.kernel.size % 3 == 0:
        noise = ["--noise", "gaussian:sigma=0.01", "--seed", "3"]
    check_processing(case, "convolve", noise)


@budget(60)
@given(processing_case(transpose=True))
def test_fuzz_transpose(case):
    check_processing(case, "transpose")


@st.composite
def method_flags(draw) -> list[str]:
    name = draw(mostly(st.sampled_from(sorted(METHODS)), ["magic"], 3))
    flags = ["-m", name]
    takes = METHODS[name].options if name in METHODS else ()
    if "iterations" in takes and draw(chance(80)):
        flags += ["--iterations", str(draw(st.integers(1, 25)))]
    options = {
        "--tol": ("tol", st.one_of(st.just("0"), _num(1e-9, 0.1))),
        "--reg": ("reg", _num(1e-6, 10)),
        "--nsr": ("nsr", _num(1e-6, 10)),
        "--rcond": ("rcond", _num(1e-12, 0.1)),
        "--lam": ("lam", _num(1e-4, 1)),
        "--tv": ("tv", _num(1e-4, 0.1)),
        "--noise-sigma": ("noise_sigma", _num(1e-4, 0.2)),
    }
    own = sorted(o for o, (field, _) in options.items() if field in takes)
    anything = st.sampled_from(sorted(options))
    pool = mostly(st.sampled_from(own), sorted(options), 5) if own else anything
    if own or draw(chance(10)):
        for option in draw(st.lists(pool, unique=True, max_size=2)):
            flags += [option, draw(options[option][1])]
    if draw(chance(25)):
        flags.append("--clip")
    return flags


@budget(40)
@given(processing_case(invert=True), method_flags())
def test_fuzz_invert(case, flags):
    check_processing(case, "invert", flags)


@budget(40)
@given(
    st.one_of(named_kernel(), kernel_array()),
    st.one_of(image_array(max_side=10), st.tuples(st.integers(1, 12), st.integers(1, 12))),
    st.data(),
)
def test_fuzz_analyze(kernel, subject, data):
    flags, correlate = geometry_flags(data.draw, transpose=False, invert=False)
    extra = data.draw(
        mostly(
            st.sampled_from([[], ["--noise-sigma", "0.01"], ["--bits", "8"], ["--bits", "16"]]),
            [["--bits", "0"], ["--noise-sigma", "-1"]],
            5,
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        case = Case(np.zeros((1, 1)), ".npy", kernel, ".npy", flags, correlate, ".npy")
        if isinstance(subject[0], np.ndarray):
            case.image, case.image_ext = subject
            image, spec = write_case_files(case, root)
            where = [image]
        else:
            _, spec = write_case_files(case, root)
            where = ["--shape", f"{subject[0]}x{subject[1]}"]
        result = invoke(["analyze", *where, "-k", spec, *geometry_argv(case), *extra, "-f", "json"])
        if result.exit_code != 0:
            assert_clean_failure(result)
            return
        report = json.loads(result.stdout)
        assert report["verdict"].split(" ")[0] in ("invertible", "not")


@budget(15)
@given(image_array(max_side=8), st.one_of(named_kernel(), kernel_array()), st.data())
def test_fuzz_roundtrip(image, kernel, data):
    flags, correlate = geometry_flags(data.draw, transpose=False, invert=False)
    names = data.draw(
        st.lists(
            mostly(st.sampled_from(sorted(set(METHODS) - {"auto"})), ["magic"], 3),
            min_size=1,
            max_size=2,
        )
    )
    extra = ["-m", ",".join(names)]
    extra += data.draw(
        mostly(
            st.sampled_from(
                [
                    [],
                    ["--noise", "gaussian:sigma=0.01", "--seed", "1"],
                    ["--noise", "poisson:peak=100", "--seed", "2"],
                    ["--bits", "8"],
                ]
            ),
            [["--noise", "poisson:peak=0"]],
            3,
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        case = Case(*image, kernel, ".npy", flags, correlate, ".npy")
        path, spec = write_case_files(case, Path(tmp))
        result = invoke(["roundtrip", path, "-k", spec, *geometry_argv(case), *extra, "-f", "json"])
        if result.exit_code != 0:
            assert_clean_failure(result)
            return
        report = json.loads(result.stdout)
        assert [row["method"] for row in report["rows"]][1:] == list(dict.fromkeys(names))


@budget(40)
@given(image_array(max_side=12), image_array(max_side=12), st.data())
def test_fuzz_compare(reference, candidate, data):
    if data.draw(chance(90)):  # mostly one shape of at least 7×7 (SSIM's window)
        shape = (max(7, reference[0].shape[0]), max(7, reference[0].shape[1]))
        shape += reference[0].shape[2:]
        reference = (np.resize(reference[0], shape), reference[1])
        candidate = (np.resize(candidate[0], shape).astype(reference[0].dtype), reference[1])
    wide = any(
        values.dtype.kind == "f" and not (0 <= values.min() and values.max() <= 1)
        for values in (reference[0], candidate[0])
    )
    options = data.draw(
        st.lists(
            mostly(
                st.sampled_from(
                    [
                        ["--min-psnr", "20"],
                        ["--max-mse", "0.5"],
                        ["--min-ssim", "0.1"],
                        ["--max-error", "inf"],
                        ["--data-range", "255"],
                        ["--ignore-border", "1"],
                        ["--per-channel"],
                        ["-m", "psnr,ssim"],
                        ["-m", "mae,max_error"],
                    ]
                ),
                [["--ignore-border", "5"], ["-m", "mae,bogus"], ["--data-range", "0"]],
                5,
            ),
            max_size=3,
        )
    )
    if wide and data.draw(chance(90)):
        options.append(["--data-range", "6"])
    fmt = data.draw(st.sampled_from(["json", "csv", "markdown", "table"]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref = Case(*reference, "box", "", {}, False, ".npy")
        cand = Case(*candidate, "box", "", {}, False, ".npy")
        (root / "r").mkdir()
        (root / "c").mkdir()
        ref_path, _ = write_case_files(ref, root / "r")
        cand_path, _ = write_case_files(cand, root / "c")
        result = invoke(["compare", ref_path, cand_path, *sum(options, []), "-f", fmt])
        thresholds = any(o[0].startswith(("--min", "--max")) for o in options)
        if result.exit_code == 2:
            assert_clean_failure(result)
            return
        assert result.exit_code == 0 or (result.exit_code == 1 and thresholds), result.output
        if fmt == "json":
            rows = json.loads(result.stdout)
            assert rows and all("candidate" in row for row in rows)


@budget(60)
@given(st.one_of(named_kernel(), kernel_array()), st.data())
def test_fuzz_kernels_show(kernel, data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        case = Case(np.zeros((1, 1)), ".npy", kernel, ".npy", {}, False, ".npy")
        _, spec = write_case_files(case, root)
        extra = data.draw(
            st.sampled_from([[], ["--normalize"], ["--precision", "0"], ["--precision", "17"]])
        )
        save = data.draw(st.booleans())
        argv = ["kernels", "show", spec, *extra] + (["--save", root / "saved.npy"] if save else [])
        result = invoke(argv)
        if result.exit_code != 0:
            assert_clean_failure(result)
            assert not (root / "saved.npy").exists()
            return
        shape = tuple(
            int(n) for n in result.stdout.splitlines()[0].rsplit("shape ", 1)[1].split("x")
        )
        if save:
            saved = np.load(root / "saved.npy", allow_pickle=False)
            assert saved.shape == shape and saved.dtype == np.float64
            assert np.isfinite(saved).all() and saved.any()


# --------------------------------------------------------------------------- corrupted bytes


def _sample_files() -> dict[str, bytes]:
    """Real files of every format the reader knows, small enough to mutate quickly."""
    rng = np.random.default_rng(11)
    files = {p.name: p.read_bytes() for p in sorted(SAMPLES.glob("*.png"))}
    files.update(
        {
            "psf_motion.npy": (SAMPLES / "psf_motion.npy").read_bytes(),
            "haar_bank.npy": (SAMPLES / "haar_bank.npy").read_bytes(),
            "psf_gaussian.csv": (SAMPLES / "psf_gaussian.csv").read_bytes(),
        }
    )
    grey = (rng.random((12, 10)) * 255).astype(np.uint8)
    rgb = (rng.random((9, 11, 3)) * 255).astype(np.uint8)
    rgba = (rng.random((8, 8, 4)) * 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        writers = {
            "grey.png": lambda p: iio.imwrite(p, grey),
            "rgba.png": lambda p: iio.imwrite(p, rgba),
            "grey.jpg": lambda p: iio.imwrite(p, grey),
            "rgb.jpg": lambda p: iio.imwrite(p, rgb),
            "rgb.bmp": lambda p: iio.imwrite(p, rgb),
            "grey.gif": lambda p: iio.imwrite(p, grey),
            "u8.tif": lambda p: tifffile.imwrite(p, grey),
            "u16rgb.tif": lambda p: tifffile.imwrite(p, (rgb.astype(np.uint16) * 257)),
            "f32.tif": lambda p: tifffile.imwrite(p, rng.random((7, 9)).astype(np.float32)),
            "f64deflate.tif": lambda p: tifffile.imwrite(p, rng.random((7, 9)), compression="zlib"),
            "f64.npy": lambda p: np.save(p, rng.random((6, 7))),
            "f32c.npy": lambda p: np.save(p, rng.random((5, 6, 3)).astype(np.float32)),
            "fortran.npy": lambda p: np.save(p, np.asfortranarray(rng.random((6, 5)))),
            "bool.npy": lambda p: np.save(p, rng.random((6, 6)) > 0.5),
        }
        for name, write in writers.items():
            write(root / name)
            files[name] = (root / name).read_bytes()
    return files


SAMPLE_FILES = _sample_files()


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(SAMPLE_FILES)))
    data = bytearray(SAMPLE_FILES[name])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "delete", "overwrite"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        # Headers are where parsers decide what to allocate: aim there half the time.
        if draw(st.booleans()):
            at = min(at, draw(st.integers(0, 200)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
    ext = draw(st.sampled_from([".png", ".npy"])) if draw(chance(12)) else Path(name).suffix
    return ext, bytes(data)


@pytest.fixture(scope="module")
def small_pixel_limit():
    """Corrupted headers may declare big images; keep the fuzz's memory in check."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DECONV_MAX_PIXELS", str(2**22))
        yield


@budget(400)
@given(mutated())
def test_fuzz_image_reader_on_corrupted_bytes(small_pixel_limit, sample):
    from deconv_cli.io import read_image

    ext, data = sample
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{ext}"
        path.write_bytes(data)
        try:
            with no_hang(30):
                image = read_image(path, max_channels=None)
        except InputError as err:
            assert "\n" not in str(err) and str(err)
            event("refused")
            return
        event("read")
        assert image.data.ndim in (2, 3) and image.data.size > 0
        assert image.data.dtype in (np.float32, np.float64)
        assert np.isfinite(image.data).all()
        assert image.alpha is None or image.alpha.shape == image.data.shape[:2]


@budget(200)
@given(mutated())
def test_fuzz_kernel_reader_on_corrupted_bytes(small_pixel_limit, sample):
    from deconv_cli.kernels import load_kernel

    ext, data = sample
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{ext}"
        path.write_bytes(data)
        try:
            with no_hang(30):
                kernel = load_kernel(str(path))
        except KernelError as err:
            assert "\n" not in str(err) and str(err)
            event("refused")
            return
        event("read")
        assert kernel.array.ndim in (2, 4) and np.isfinite(kernel.array).all()
        assert kernel.array.any()


def test_fuzz_samples_are_valid_before_mutation(small_pixel_limit):
    """The seeds of the byte fuzz are readable as they are (else it fuzzes nothing)."""
    from deconv_cli.io import read_image
    from deconv_cli.kernels import load_kernel

    kernels = ("haar_bank.npy", "psf_gaussian.csv", "psf_motion.npy")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in SAMPLE_FILES.items():
            path = Path(tmp) / name
            path.write_bytes(data)
            if name in kernels:
                assert load_kernel(str(path)).array.any(), name
            else:
                assert read_image(path, max_channels=None).data.size > 0, name
