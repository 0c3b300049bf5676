"""Fuzzing: random images, kernels, geometry flags and methods through every command.

Every run must end in one of two ways: success with a valid, readable output of
the expected shape (the shape rules of docs/conventions.md, computed here independently),
or exit 2 with one line ``deconv: error: ...`` on stderr. Anything else (another
exception, a traceback, exit 1 or 3) is a bug. A second family corrupts the bytes
of real image files (bit flips, truncation, insertion, deletion) and feeds them to
the image and kernel readers: a valid image/kernel or a one-line InputError /
KernelError, never another exception, never a hang.

A third family runs folders of images through convolve, transpose and invert with
the batch options (-r, -o DIR, --name, --format, --jobs, --skip-existing,
--overwrite, --fail-fast, --dtype, --tile, --tile-margin, -q): exit 0 with every
planned output written, exit 1 with each failing item named and every other item's
output written, or exit 2 with one line; inputs unchanged, no temporary file left.

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


FUZZ_MEMORY = 4 << 30


@pytest.fixture(autouse=True, scope="module")
def _memory_cap():
    """Long runs cap each worker's address space at 4 GiB: deconv's memory estimate
    counts that limit, so a tiny image with a huge geometry is refused before the work
    instead of growing a worker until the machine swaps (an uncapped run once reached
    14.5 GB). ``make test`` (the ci profile) runs uncapped."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = FUZZING and (soft == resource.RLIM_INFINITY or soft > FUZZ_MEMORY)
    if cap:
        resource.setrlimit(resource.RLIMIT_AS, (FUZZ_MEMORY, hard))
    yield
    if cap:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


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


PROGRESS = re.compile(r"iteration \d+: residual |tile \d+/\d+$")


def outcome(result) -> str:
    """``exit 0``, or the exit code and the start of the message with values masked."""
    if result.exit_code == 0:
        return "exit 0"
    masked = re.sub(r"`[^`]*`|[0-9.]+", "X", result.stderr.removeprefix("deconv: error: "))
    return f"exit {result.exit_code}: {masked[:60]}"


def assert_clean_failure(result, progress: bool = False) -> None:
    """Exit 2 and one error line (after warnings, if the computation had started, and
    with ``progress`` the progress lines of an invert that ran first)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    *before, last = result.stderr.splitlines() or [""]
    assert last.startswith("deconv: error: "), result.stderr
    for line in before:
        assert line.startswith("deconv: warning: ") or (progress and PROGRESS.match(line)), line
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- strategies

BAD_NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e10", "1e309", "abc", "", "2.5"]


def _num(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False).map(lambda v: f"{v:.3g}")


HUGE_WEIGHTS = ["1e9", "2e9", "1e20", "1e300"]  # at and above the accepted limit (1e9)
HUGE_NOISE = ["1e3", "2e3", "1e200"]  # at and above 1e3 × the data scale


def _extreme(typical, huge: list[str]):
    """``typical``, or 10 % of the time a value at or above the limit: accepted with a
    finite result, or refused with one line (1e20 once wrote NaN with exit 0)."""
    return mostly(typical, huge, 10)


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
def image_array(draw, max_side: int = 12, huge: bool = True) -> tuple[np.ndarray, str]:
    """A small image and the extension to store it with; ``huge``: sometimes float64
    values beyond float32 and beyond what invert accepts (the batch model leaves them out:
    it predicts each item's outcome from the batch rules alone)."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    channels = draw(st.sampled_from([None, None, 1, 3, 5]))
    shape = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kinds = ["f64", "f64", "f32", "u8", "u16", "bool", "wide"] + (["huge"] if huge else [])
    kind = draw(st.sampled_from(kinds))
    ext = ".npy"
    if kind == "f64":
        array = rng.random(shape)
    elif kind == "wide":
        array = rng.uniform(-3, 3, shape)
    elif kind == "huge":  # beyond float32, and beyond what invert can square
        array = rng.uniform(-1, 1, shape) * draw(st.sampled_from([1e30, 1e100, 1e160, 1e250]))
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
    """The geometry the flags describe per docs/conventions.md, or None if they are invalid."""
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
    """Output shape of A (docs/conventions.md), or None where A has no output or channels clash."""
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
    if len(image_shape) == 3 and image_shape[2] > 4:
        return None  # no image has more than 4 channels: the array is ambiguous
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
    if len(data_shape) == 3 and data_shape[2] > 4:
        return None  # no image has more than 4 channels: the array is ambiguous
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


def save_image(path: Path, image: np.ndarray) -> None:
    """Write ``image`` in the format its (case-insensitive) extension names."""
    ext = path.suffix.lower()
    if ext == ".npy":
        with open(path, "wb") as handle:  # np.save(path) would append ".npy" to other names
            np.save(handle, image)
    elif ext == ".tif":
        tifffile.imwrite(path, image, photometric="rgb" if image.ndim == 3 else None)
    else:
        iio.imwrite(path, image, extension=ext)


def write_case_files(case: Case, root: Path) -> tuple[Path, str]:
    image = root / f"image{case.image_ext}"
    save_image(image, case.image)
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
    return named_kernel_shape(case.kernel)


def named_kernel_shape(spec: str) -> tuple[int, ...] | None:
    """The shape `deconv kernels show SPEC` prints, or None for an invalid spec."""
    shown = CliRunner().invoke(main, ["kernels", "show", spec])
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
        "--reg": ("reg", _extreme(_num(1e-6, 10), HUGE_WEIGHTS)),
        "--nsr": ("nsr", _extreme(_num(1e-6, 10), HUGE_WEIGHTS)),
        "--rcond": ("rcond", _num(1e-12, 0.1)),
        "--lam": ("lam", _extreme(_num(1e-4, 1), HUGE_WEIGHTS)),
        "--tv": ("tv", _extreme(_num(1e-4, 0.1), HUGE_WEIGHTS)),
        "--noise-sigma": ("noise_sigma", _extreme(_num(1e-4, 0.2), HUGE_NOISE)),
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
            [
                ["--noise", "poisson:peak=0"],
                # data too large to square: each method's row fails, the command succeeds
                ["--noise", "gaussian:sigma=1e200", "--seed", "1"],
                ["--noise", "poisson:peak=1e-300", "--seed", "1"],
            ],
            5,
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
        methods = [row["method"] for row in report["rows"]]
        assert methods == ["blurred", "transpose", *dict.fromkeys(names)]


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


# --------------------------------------------------------------------------- batches
#
# Folders of 2-5 small images (some in subfolders, sometimes one corrupt or
# wrong-shaped file) through convolve, transpose and invert with the batch options.
# The oracle restates docs/guide/batches.md: which files a folder contributes and in which
# order, where each output goes, which items are done, skipped or failed, and the exit
# status. Then the files: each done item's output reads back with the expected shape
# and dtype, nothing else is written, inputs (and outputs not redone) keep their bytes,
# and no `.deconv-*` temporary file is left.

FORMAT_EXTENSIONS = {"npy": ".npy", "NPY": ".npy", ".npy": ".npy", "tif": ".tif"}
FORMAT_EXTENSIONS |= {"tiff": ".tif", "png": ".png", "jpg": ".jpg", "bmp": ".bmp"}
EVERY_DTYPE = ("uint8", "uint16", "float32", "float64")
HOLDS = {  # the dtypes each output format holds (docs/conventions.md, *Data*); the fallback last
    ".npy": EVERY_DTYPE,
    ".tif": EVERY_DTYPE,
    ".png": ("uint8", "uint16"),
    ".jpg": ("uint8",),
    ".bmp": ("uint8",),
}
CHANNELS = {".tif": (1, 2, 3, 4), ".png": (1, 3), ".jpg": (1, 3), ".bmp": (1, 3)}
NAME_TEMPLATES = {
    "{stem}{ext}": "valid",
    "{stem}_x{ext}": "valid",
    "out-{stem}{ext}": "valid",
    "{stem}{ext}{ext}": "valid",
    "{stem[0]}{ext}": "invalid",  # no indexing, attributes or format specs
    "{stem:>9}{ext}": "invalid",
    "{stem.__class__}{ext}": "invalid",
    "{ext!r}": "invalid",
    "{stem}.npy": "valid",
    "{{stem}}{ext}": "valid",  # literal braces: every input of a folder onto one name
    "{stem}": "no extension",
    "{stem}.out": "no extension",
    "{ext}{stem}": "no extension",
    "": "empty",
    "{name}{ext}": "invalid",
    "{stem": "invalid",
    "{stem}}{ext}": "invalid",
    "{}{ext}": "invalid",
    "{stem:d}{ext}": "invalid",
    "sub/{stem}{ext}": "invalid",
    "..": "invalid",
}
STEMS = ["a", "b", "c", "d", "e", "f", "g", "x.y", "two words", "é"]
BATCH_KERNELS = ["gaussian:sigma=1", "box:size=3", "disk:radius=1.5", "motion:length=4,angle=30"]
BATCH_KERNELS += ["identity", "box:size=9", "laplacian"]
PROCESS_GEOMETRIES = [{}, {}, {}, {"--mode": "full"}, {"--mode": "valid"}]
PROCESS_GEOMETRIES += [{"--boundary": "wrap"}, {"--stride": "2"}, {"--boundary": "constant"}]
INVERT_GEOMETRIES = [{}, {}, {}, {"--boundary": "wrap"}, {"--boundary": "unknown"}]
INVERT_GEOMETRIES += [{"--mode": "full"}, {"--stride": "2"}]
INVERT_METHODS = [
    ["-m", "wiener"],
    ["-m", "wiener", "--nsr", "0.01"],
    ["-m", "tikhonov"],
    ["-m", "tikhonov", "--reg", "0.01"],
    ["-m", "cgls", "--iterations", "3"],
    ["-m", "richardson-lucy", "--iterations", "2"],
]
BAD_FILES = ["empty", "text", "truncated", "4-D", "NaN"]


@dataclass
class BatchFile:
    """A file of the input folder: an image, or a ``bad`` one that must fail its item."""

    relative: str
    image: np.ndarray
    bad: str | None = None


@dataclass
class BatchCase:
    """One generated batch run; ``existing`` outputs are created before it runs."""

    files: list[BatchFile]
    explicit: tuple[int, bool] | None  # a file named besides its folder: (index, named first)
    kernel: str
    flags: dict[str, str]
    correlate: bool
    method: list[str]
    output: str  # new, new/ (trailing slash), existing, inputs (the input folder), file
    options: dict[str, str | None]  # --name, --format, --dtype, --jobs, --tile, --tile-margin
    switches: list[str]
    existing: list[tuple[int, str]]  # (item index, "file" or "dir")


def weighted(draw, choices: list[tuple[int, object]]):
    """One of the values (or a draw from a strategy), with the given percentages.

    Put the usual value first: hypothesis favours 0 and small numbers, which pick it.
    """
    roll = draw(st.integers(0, 10**6)) % 100
    for percent, value in choices:
        roll -= percent
        if roll < 0:
            return draw(value) if isinstance(value, st.SearchStrategy) else value
    raise AssertionError("the percentages do not sum to 100")


@st.composite
def batch_file(draw, relative_dir: str, bad: bool) -> BatchFile:
    image, ext = draw(image_array(max_side=8, huge=False))
    kind = draw(st.sampled_from(BAD_FILES)) if bad else None
    if kind in ("4-D", "NaN"):
        image = np.zeros((2, 3, 3, 2)) if kind == "4-D" else np.full((3, 4), np.nan)
        ext = draw(st.sampled_from([".npy", ".npy", ".png"]))  # .png: an .npy inside
    elif kind == "truncated" and ext not in (".npy", ".png"):
        ext = ".npy"  # TIFF pixel data has no checksum: a cut may read as damaged pixels
    if draw(chance(10)):
        ext = ext.upper()
    return BatchFile(f"{relative_dir}{draw(st.sampled_from(STEMS))}{ext}", image, kind)


@st.composite
def batch_case(draw, command: str) -> BatchCase:
    count = draw(st.integers(2, 5))
    subfolders = draw(chance(40))
    bad = draw(st.integers(0, count - 1)) if draw(chance(30)) else None
    files: list[BatchFile] = []
    for i in range(count):
        where = draw(st.sampled_from(["", "sub/", "sub/deeper/"])) if subfolders else ""
        file = draw(batch_file(where, bad == i))
        if any(f.relative == file.relative for f in files):
            file.relative = f"{where}{i}{file.relative[len(where) :]}"
        files.append(file)
    explicit = None
    if draw(chance(15)):
        explicit = (draw(st.integers(0, count - 1)), draw(st.booleans()))

    kernel = draw(mostly(st.sampled_from(BATCH_KERNELS), named_kernel(), 6))
    flags = dict(
        draw(st.sampled_from(INVERT_GEOMETRIES if command == "invert" else PROCESS_GEOMETRIES))
    )
    method = draw(st.sampled_from(INVERT_METHODS)) if command == "invert" else []
    valid = sorted(t for t, kind in NAME_TEMPLATES.items() if kind == "valid")
    odd = sorted(t for t, kind in NAME_TEMPLATES.items() if kind != "valid")
    formats = st.sampled_from(sorted(FORMAT_EXTENSIONS))
    tiles = st.sampled_from(["1", "2", "3", "5", "64"])  # 64: larger than every image
    options = {
        "--name": weighted(
            draw, [(55, None), (33, st.sampled_from(valid)), (12, st.sampled_from(odd))]
        ),
        "--format": weighted(
            draw, [(60, None), (36, formats), (4, st.sampled_from(["gif", "xyz", ""]))]
        ),
        "--dtype": weighted(draw, [(71, None), (27, st.sampled_from(EVERY_DTYPE)), (2, "int8")]),
        "--jobs": weighted(draw, [(71, None), (21, "1"), (7, "2"), (1, "-1")]),
        "--tile": weighted(draw, [(64, None), (35, tiles), (1, "0")]),
        "--tile-margin": None,
    }
    if command == "invert":
        margins = st.sampled_from(["0", "1", "3"])
        tiled = options["--tile"] is not None
        options["--tile-margin"] = weighted(
            draw, [(60, None), (40, margins)] if tiled else [(95, None), (5, "2")]
        )
    switches = (
        [draw(st.sampled_from(["-r", "--recursive"]))]
        if draw(chance(80 if subfolders else 10))
        else []
    )
    switches += weighted(
        draw,
        [
            (46, []),
            (25, ["--overwrite"]),
            (25, ["--skip-existing"]),
            (4, ["--overwrite", "--skip-existing"]),
        ],
    )
    switches += ["--fail-fast"] if draw(chance(25)) else []
    switches += ["-q"] if draw(st.booleans()) else []
    output = weighted(
        draw, [(30, "new"), (27, "new/"), (31, "existing"), (7, "inputs"), (5, "file")]
    )
    existing = []
    if output != "inputs" and draw(chance(40)):
        kinds = st.just("file") if output == "file" else mostly(st.just("file"), ["dir"], 15)
        existing = draw(st.lists(st.tuples(st.integers(0, 4), kinds), min_size=1, max_size=2))
    correlate = draw(chance(20))
    return BatchCase(
        files, explicit, kernel, flags, correlate, method, output, options, switches, existing
    )


def write_batch_files(case: BatchCase, folder: Path) -> None:
    """The case's files, and files a folder never contributes (hidden, not images)."""
    for file in case.files:
        path = folder / file.relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if file.bad in ("4-D", "NaN"):
            with open(path, "wb") as handle:  # an .npy, whatever its name says
                np.save(handle, file.image)
        else:
            save_image(path, file.image)
        if file.bad == "empty":
            path.write_bytes(b"")
        elif file.bad == "text":
            path.write_bytes(b"not an image\n")
        elif file.bad == "truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    np.save(folder / ".hidden.npy", np.ones((3, 3)))
    (folder / "notes.txt").write_text("not an image\n")
    (folder / ".cache").mkdir()
    np.save(folder / ".cache" / "old.npy", np.ones((3, 3)))


@dataclass
class Planned:
    """One item as docs/guide/batches.md plans it."""

    file: BatchFile
    source: Path
    output: Path


def batch_inputs(case: BatchCase, folder: Path) -> list[Path]:
    if case.explicit is None:
        return [folder]
    index, first = case.explicit
    named = folder / case.files[index].relative
    return [named, folder] if first else [folder, named]


def batch_output(case: BatchCase, root: Path) -> str:
    return {
        "new": str(root / "out"),
        "new/": f"{root / 'out'}/",
        "existing": str(root / "out"),
        "inputs": str(root / "in"),
        "file": str(root / "result.npy"),
    }[case.output]


def batch_argv(case: BatchCase, command: str, root: Path) -> list:
    geometry = [part for flag in case.flags.items() for part in flag]
    geometry += ["--correlate"] if case.correlate else []
    options = [part for flag in case.options.items() if flag[1] is not None for part in flag]
    return [
        command,
        *batch_inputs(case, root / "in"),
        *["-k", case.kernel, *geometry, *case.method],
        *["-o", batch_output(case, root), *options, *case.switches],
    ]


ONE_ITEM_FAILS = "the one item fails"
NO_EXTENSION = "an -o file without an image extension, or not the --format's"
LATE_USAGE_ERRORS = (ONE_ITEM_FAILS,)  # found when the one item runs, after its progress


def plan_batch(case: BatchCase, root: Path) -> list[Planned] | str:
    """The items in the order they start, or why the command is a usage error."""
    folder = root / "in"
    recursive = "-r" in case.switches or "--recursive" in case.switches
    sources: list[tuple[BatchFile, Path, Path]] = []  # file, path, path below its folder
    for spec in batch_inputs(case, folder):
        if spec == folder:
            found = [f for f in case.files if recursive or "/" not in f.relative]
            if not found:
                return "a folder without images"
            pairs = sorted(
                ((f, folder / f.relative, Path(f.relative)) for f in found),
                key=lambda pair: pair[2].parts,
            )
        else:
            pairs = [(case.files[case.explicit[0]], spec, Path(spec.name))]
        sources += [p for p in pairs if all(p[1] != s[1] for s in sources)]

    name, fmt = case.options["--name"], case.options["--format"]
    if name is not None and NAME_TEMPLATES[name] in ("invalid", "empty"):
        return "a bad --name template"
    if fmt is not None and fmt not in FORMAT_EXTENSIONS:
        return "an unknown --format"
    forced = FORMAT_EXTENSIONS.get(fmt)
    target = Path(batch_output(case, root))
    as_dir = name is not None or batch_output(case, root).endswith("/") or target.is_dir()
    if not as_dir and len(sources) > 1:
        if target.suffix in HOLDS:
            return "a file -o for several inputs"
        as_dir = True
    if not as_dir:
        if target.suffix not in HOLDS or (forced is not None and target.suffix != forced):
            return NO_EXTENSION
        return _checked([Planned(sources[0][0], sources[0][1], target)], case)
    planned = []
    for file, source, relative in sources:
        stem = relative.name[: -len(relative.suffix) or None]
        file_name = (name or "{stem}{ext}").format(stem=stem, ext=forced or relative.suffix.lower())
        planned.append(Planned(file, source, target / relative.parent / file_name))
    if name is not None and any(p.output.suffix.lower() not in HOLDS for p in planned):
        return "a --name that gives no output extension"
    checked = _checked(planned, case)
    if isinstance(checked, str):
        return checked
    outputs = [p.output for p in planned]
    if len(set(outputs)) < len(outputs):
        return "two inputs onto one output"
    if set(outputs) & {p.source for p in planned}:
        return "an output over an input"
    return planned


def _checked(planned: list[Planned], case: BatchCase) -> list[Planned] | str:
    """Outputs whose extension is no format, or whose format cannot hold --dtype."""
    dtype = case.options["--dtype"]
    for p in planned:
        holds = HOLDS.get(p.output.suffix.lower())
        if holds is None:
            return NO_EXTENSION
        if dtype is not None and dtype not in holds:
            return "a --dtype the output format cannot hold"
    return planned


def batch_usage_error(case: BatchCase, kernel_shape) -> str | None:
    """A usage error in the options themselves."""
    if kernel_shape is None:
        return "an invalid kernel"
    if "--overwrite" in case.switches and "--skip-existing" in case.switches:
        return "--overwrite with --skip-existing"
    if case.options["--jobs"] == "-1" or case.options["--dtype"] == "int8":
        return "a --jobs or --dtype out of range"
    if case.options["--tile"] == "0":
        return "--tile 0"
    return None


def option_usage_error(case: BatchCase, command: str, geometry: Geometry) -> str | None:
    """Options no item can run with: refused before any work (exit 2)."""
    tile, margin = case.options["--tile"], case.options["--tile-margin"]
    if command != "invert":
        return None
    if margin is not None and tile is None:
        return "--tile-margin without --tile"
    tiled_geometry = geometry.mode == "same" and geometry.stride == (1, 1)
    if tile is not None and not (tiled_geometry and geometry.padding is None):
        return "a tiled invert of another geometry"
    if "richardson-lucy" in case.method and case.kernel.startswith("laplacian"):
        return "richardson-lucy with a kernel that has negative entries"
    return None


def expected_outcome(case, item: Planned, command: str, kernel_shape, geometry):
    """``(status, shape, dtype)``: ``done`` with the output's shape and dtype, or
    ``skipped`` or ``failed``."""
    there = item.output.exists() or item.output.is_symlink()
    if there and "--skip-existing" in case.switches:
        return "skipped", None, None
    if (there and "--overwrite" not in case.switches) or item.output.is_dir():
        return "failed", None, None
    if item.file.bad is not None:
        return "failed", None, None
    image = item.file.image
    if "richardson-lucy" in case.method and not np.any(np.asarray(image, dtype=float) > 0):
        return "failed", None, None  # its data must have a positive value (docs/guide/invert.md)
    if command == "convolve":
        shape = forward_shape(image.shape, kernel_shape, geometry)
    elif case.flags.get("--boundary") == "unknown":
        shape = image.shape
    else:
        shape = adjoint_shape(image.shape, kernel_shape, geometry, None)
    ext = item.output.suffix.lower()
    if shape is None or ext not in HOLDS:
        return "failed", None, None
    if ext in CHANNELS and (shape[2] if len(shape) == 3 else 1) not in CHANNELS[ext]:
        return "failed", None, None
    dtype = case.options["--dtype"]
    if dtype is None and ext == ".npy":  # .npy keeps the computed floats (docs/conventions.md)
        dtype = "float32" if image.dtype == np.float32 else "float64"
    elif dtype is None:
        implied = "uint8" if image.dtype == np.bool_ else image.dtype.name
        dtype = implied if implied in HOLDS[ext] else HOLDS[ext][-1]
    elif dtype not in HOLDS[ext]:
        return "failed", None, None
    return "done", shape, dtype


def file_hashes(root: Path) -> dict[Path, str]:
    import hashlib

    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def create_existing(case: BatchCase, items: list[Planned]) -> None:
    for index, kind in case.existing:
        path = items[index % len(items)].output
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            continue
        if kind == "dir":
            path.mkdir()
        else:
            path.write_bytes(b"an older output\n")


def check_written(case: BatchCase, item: Planned, shape: tuple, dtype: str) -> None:
    written = read_back(item.output)
    assert same_pixels_shape(written.shape, shape), (item.output, written.shape, shape)
    # imageio (Pillow) reads a 16-bit colour PNG as 8 bits: its dtype is not checked.
    if not (item.output.suffix == ".png" and written.ndim == 3):
        assert written.dtype == np.dtype(dtype), (item.output, written.dtype, dtype)
    assert np.isfinite(written).all()


def check_batch(case: BatchCase, command: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_batch_files(case, root / "in")
        if case.output == "existing" or (case.output == "new" and case.existing):
            (root / "out").mkdir()
        kernel_shape = named_kernel_shape(case.kernel)
        geometry = parse_geometry(case.flags)
        items = plan_batch(case, root)
        usage = (
            batch_usage_error(case, kernel_shape)
            or (items if isinstance(items, str) else None)
            or option_usage_error(case, command, geometry)
        )
        if usage is None:
            create_existing(case, items)
            expected = [
                expected_outcome(case, item, command, kernel_shape, geometry) for item in items
            ]
            if len(items) == 1 and expected[0][0] == "failed":
                usage = ONE_ITEM_FAILS
        before = file_hashes(root)

        result = invoke(batch_argv(case, command, root))

        assert not list(root.rglob(".deconv-*")), "a temporary file was left"
        after = file_hashes(root)
        for path, digest in before.items():
            if path.is_relative_to(root / "in"):
                assert after.get(path) == digest, f"input {path} changed"
        written = {p for p in after if before.get(p) != after[p]}
        assert result.stdout == "", "stdout is for data (-o -) only"
        if usage is not None:
            event(f"{command} batch: usage error: {usage}")
            # A single item's failure is found as it runs: its progress lines may precede.
            late = usage in LATE_USAGE_ERRORS and "-q" not in case.switches
            assert_clean_failure(result, progress=late)
            assert not written, written
            return

        check_items(case, command, items, expected, result, written)


def check_items(case: BatchCase, command: str, items, expected, result, written) -> None:
    """Exit status, each item's output and report, and the totals line."""
    stderr = result.stderr
    statuses = [status for status, _, _ in expected]
    first_failure = statuses.index("failed") if "failed" in statuses else None
    fail_fast = "--fail-fast" in case.switches
    serial = case.options["--jobs"] in (None, "1")
    event(f"{command} batch: {len(items)} items, " + ", ".join(sorted(set(statuses))))
    notable = {
        "--jobs 2": not serial,
        "--tile": case.options["--tile"] is not None,
        "--fail-fast stopping": fail_fast and first_failure is not None,
        "existing outputs": bool(case.existing),
        "a subfolder": any("/" in p.file.relative for p in items),
        "a file named besides its folder": case.explicit is not None,
    }
    for what in (what for what, present in notable.items() if present):
        event(f"{command} batch ran with {what}")
    expected_exit = 0 if first_failure is None else 2 if len(items) == 1 else 1
    assert result.exit_code == expected_exit, (result.exit_code, stderr)

    done = set()
    for index, (item, (status, shape, dtype)) in enumerate(zip(items, expected, strict=True)):
        # --fail-fast starts nothing after the first failure (with --jobs 2 the items
        # already started finish, and the next ones may have started).
        maybe_run = not fail_fast or first_failure is None or index <= first_failure
        if item.output in written:
            assert status == "done" and (maybe_run or not serial), (item, status)
            check_written(case, item, shape, dtype)
            done.add(item.output)
        else:
            assert status != "done" or not maybe_run, f"{item.output} was not written"
        if status == "failed" and maybe_run:
            lines = [li for li in stderr.splitlines() if f"FAILED {item.source}: " in li]
            assert lines, f"the failure of {item.source} is not reported"
            assert not re.search(r": (unexpected \w+: |worker failed)", lines[0]), lines[0]
            if item.output.is_file() and "--overwrite" not in case.switches:
                assert f"`{item.output}`" in lines[0], "an existing output must be named"
    assert written == done, written - done

    lines = stderr.splitlines()
    if "-q" in case.switches:
        assert all(li.startswith(("FAILED ", "deconv: warning: ")) for li in lines), stderr
        return
    if len(items) == 1:
        return
    totals = next(li for li in lines if re.match(r"\d+ items: ", li))
    pattern = r"(\d+) items: (\d+) done, (\d+) skipped, (\d+) failed(?:, (\d+) not run)?"
    total, done_count, skipped, failed, not_run = (
        int(n or 0) for n in re.match(pattern, totals).groups()
    )
    assert total == len(items) == done_count + skipped + failed + not_run, totals
    assert done_count == len(done), totals
    if serial or not fail_fast:
        ran = statuses[: first_failure + 1] if fail_fast and first_failure is not None else statuses
        assert (skipped, failed) == (ran.count("skipped"), ran.count("failed")), totals


@budget(150)
@given(batch_case("convolve"))
def test_fuzz_batch_convolve(case):
    check_batch(case, "convolve")


@budget(100)
@given(batch_case("transpose"))
def test_fuzz_batch_transpose(case):
    check_batch(case, "transpose")


@budget(120)
@given(batch_case("invert"))
def test_fuzz_batch_invert(case):
    check_batch(case, "invert")


GAUSSIAN = ["-k", "gaussian:sigma=1"]
BATCH_CONFLICTS = {
    "tile-margin-without-tile": ["invert", *GAUSSIAN, "-m", "wiener", "--tile-margin", "2"],
    "tiled-invert-with-stride": [
        "invert",
        *GAUSSIAN,
        "-m",
        "wiener",
        "--tile",
        "3",
        "--stride",
        "2",
    ],
    "richardson-lucy-with-laplacian": ["invert", "-k", "laplacian", "-m", "richardson-lucy"],
    "name-without-extension": ["convolve", *GAUSSIAN, "--name", "{stem}"],
    "format-cannot-hold-dtype": ["convolve", *GAUSSIAN, "--format", "jpg", "--dtype", "float32"],
    "empty-name": ["convolve", *GAUSSIAN, "--name", ""],
}


def test_tiled_float32_npy_with_dtype_float64_writes_float64(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(3).random((8, 8)).astype(np.float32))
    out = tmp_path / "y.npy"
    argv = ["convolve", tmp_path / "x.npy", "-k", "gaussian:sigma=1", "--tile", "4"]
    result = CliRunner().invoke(main, [str(a) for a in argv + ["--dtype", "float64", "-o", out]])
    assert result.exit_code == 0, result.stderr
    assert np.load(out).dtype == np.float64


def test_unknown_output_extension_is_refused_before_any_work(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(4).random((8, 8)))
    argv = ["invert", tmp_path / "x.npy", "-k", "gaussian:sigma=1", "-m", "cgls", "-o"]
    result = CliRunner().invoke(main, [str(a) for a in argv + [tmp_path / "y.xyz"]])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("deconv: error: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("argv", BATCH_CONFLICTS.values(), ids=BATCH_CONFLICTS.keys())
def test_batch_option_conflicts_are_usage_errors(tmp_path, argv):
    """Options that no item can run with are bad usage: exit 2 before any work."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for name in ("a.npy", "b.npy"):
        np.save(folder / name, rng.random((6, 6)))
    out = tmp_path / "out"
    command, *options = argv
    result = CliRunner().invoke(main, [command, str(folder), *options, "-o", str(out)])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.startswith("deconv: error: ") and result.stderr.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


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
