"""``compare``: pair references with candidates, measure them, apply thresholds.

(Near 600 lines, a quarter of them docstrings: pairing, measuring, thresholds and
difference maps are the steps of one command's pass over the pairs, with no other user.)

Pure data in, data out: :func:`compare_images` returns a :class:`CompareResult`
that the CLI renders with :mod:`deconv_cli.report`.

Rules
-----
- **Pairing.** ``REFERENCE CANDIDATE...`` compares every candidate with the one
  reference. ``REF_DIR CAND_DIR`` pairs the image files of the two folders (not
  recursive, hidden files skipped) by stem, whatever their extensions
  (``a.png`` with ``a.tif``); a file without a partner is a failed comparison
  (``failures == ["missing"]``), never skipped.
- **Scale.** Values are on deconv's [0, 1] scale with data range 1: integer files
  are divided by their dtype's maximum (so 8- and 16-bit results are comparable);
  float files are taken as they are and must lie in [0, 1], unless ``data_range``
  is given, in which case float files are divided by it (so PSNR and SSIM equal
  skimage's with ``data_range`` on the raw values, and the other metrics are on the
  unit scale). Alpha channels are ignored.
- **Volumes.** A TIFF stack, or a ``.npy`` read with ``axes`` naming Z, is a volume:
  its metrics are over every voxel, SSIM with a 7×7×7 window (as ``skimage.metrics``
  computes them on 3-D arrays). Both files of a pair must be volumes, or neither.
- **Rows.** One row per pair over all channels (and planes); with ``per_channel`` one
  more row per channel of a multi-channel image; with ``per_slice`` one more row per
  plane ``z`` of a volume (2-D metrics on that plane). ``ignore_border`` crops that
  many pixels from every side of both images first (planes too, for a volume).
- **Thresholds.** ``{metric: limit}``: a maximum for the error metrics, a minimum
  for ``psnr`` and ``ssim``, both inclusive. A row passes when all hold; a pair
  passes when all its rows pass.

Size: a little over 500 lines for one idea, the ``compare`` experiment (pairing,
scale, rows, thresholds and the difference maps of those rows); no part of it is
used elsewhere.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deconv_cli import fs
from deconv_cli.errors import InputError, OutputError, mention
from deconv_cli.formats import READ_EXTENSIONS, WRITE_EXTENSIONS
from deconv_cli.metrics import METRICS, compute_metrics, resolve_metrics

DIFF_SUFFIX = ".diff.png"

# --diff maps |difference| in [0, DIFF_RANGE] (the [0, 1] scale) onto the colour table, so
# maps of different pairs and runs compare; larger differences show in the top colour.
DIFF_RANGE = 0.1


@dataclass(frozen=True)
class Pair:
    """A reference and a candidate; one of them is None when pairing found no partner."""

    reference: Path | None
    candidate: Path | None


@dataclass
class ComparisonRow:
    """One row of the report: a pair over all channels, or one channel of it."""

    reference: str | None
    candidate: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    channel: int | None = None
    error: str | None = None
    z: int | None = None

    @property
    def passed(self) -> bool:
        """True when every threshold holds (and both files exist)."""
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        """Flat dict for :mod:`deconv_cli.report` (keys as in the JSON output)."""
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "z": self.z,
            "channel": self.channel,
            **self.metrics,
            "passed": self.passed,
            "failures": list(self.failures),
            "error": self.error,
        }


@dataclass(frozen=True)
class DiffMap:
    """A written difference heat map: black is 0, pale yellow ``diff_range`` and above."""

    path: Path
    max_difference: float
    diff_range: float
    saturated: int


@dataclass
class PairResult:
    """All rows of one pair, and its heat map if one was written."""

    pair: Pair
    rows: list[ComparisonRow]
    diff: DiffMap | None = None

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)


@dataclass
class CompareResult:
    """Everything ``compare`` measured, in pairing order."""

    pairs: list[PairResult]
    metrics: list[str]

    @property
    def rows(self) -> list[ComparisonRow]:
        return [row for pair in self.pairs for row in pair.rows]

    @property
    def passed(self) -> bool:
        """True when every pair passed."""
        return all(pair.passed for pair in self.pairs)

    @property
    def passed_count(self) -> int:
        return sum(pair.passed for pair in self.pairs)

    def worst(self, names: Sequence[str] = ("psnr", "ssim")) -> dict[str, tuple[float, str]]:
        """``{metric: (lowest value, where)}`` over all rows, for higher-is-better metrics.

        ``where`` is the candidate's file name (the reference's for a missing
        candidate), with the channel for a per-channel row. NaN values are skipped.
        """
        worst: dict[str, tuple[float, str]] = {}
        for name in names:
            if name not in self.metrics:
                continue
            for row in self.rows:
                value = row.metrics.get(name)
                if value is None or math.isnan(value):
                    continue
                if name not in worst or value < worst[name][0]:
                    worst[name] = (value, _row_label(row))
        return worst


def _row_label(row: ComparisonRow) -> str:
    name = Path(row.candidate or row.reference or "?").name
    if row.z is not None:
        name = f"{name}, z {row.z}"
    return name if row.channel is None else f"{name}, channel {row.channel}"


# --- pairing -------------------------------------------------------------------------


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and _suffix(path) in READ_EXTENSIONS


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _images_by_stem(directory: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not _is_image_file(path):
            continue
        if path.stem in found:
            raise InputError(
                f"`{found[path.stem]}` and `{path}` have the same name; pairing by name "
                "needs one image per name in each directory"
            )
        found[path.stem] = path
    return found


def pair_inputs(reference: str | Path, candidates: Sequence[str | Path]) -> list[Pair]:
    """Pair a reference with candidates, or two directories' files by stem.

    Parameters
    ----------
    reference : path
        A reference image, or a directory of them.
    candidates : sequence of paths
        Candidate images; exactly one directory when ``reference`` is a directory.

    Returns
    -------
    list of Pair
        In the order given, or sorted by stem for directories; a file without a
        partner gives a pair whose other side is None.
    """
    reference = Path(reference)
    candidates = [Path(candidate) for candidate in candidates]
    if not candidates:
        raise InputError("no CANDIDATE given: compare needs a reference and at least one candidate")
    if reference.is_dir():
        if len(candidates) != 1 or not candidates[0].is_dir():
            raise InputError(
                f"REFERENCE `{reference}` is a directory, so CANDIDATE must be exactly one "
                f"directory (got {', '.join(f'`{c}`' for c in candidates)})"
            )
        references = _images_by_stem(reference)
        found = _images_by_stem(candidates[0])
        if not references and not found:
            raise InputError(f"no images in `{reference}` nor in `{candidates[0]}`")
        return [
            Pair(references.get(stem), found.get(stem))
            for stem in sorted(set(references) | set(found))
        ]
    for candidate in candidates:
        if candidate.is_dir():
            raise InputError(
                f"CANDIDATE `{candidate}` is a directory; to pair files by name give a "
                "directory as REFERENCE too"
            )
    return [Pair(reference, candidate) for candidate in candidates]


# --- loading -------------------------------------------------------------------------


def _span(data: np.ndarray) -> str:
    return f"[{float(data.min()):.4g}, {float(data.max()):.4g}]"


def prepare(image: Any, data_range: float | None = None) -> np.ndarray:
    """The values of a read image on the unit scale, as float64 H×W or H×W×C, or for
    a volume (``"Z" in image.axes``) Z×Y×X×C (C may be 1, as the metrics take volumes).

    ``image`` is a :class:`deconv_cli.io.Image` (``data`` already scaled to [0, 1]
    for integer files). Float data must lie in [0, 1] unless ``data_range`` is
    given, in which case it is divided by ``data_range``. An image's trailing channel
    axis of length 1 is dropped; alpha (``image.alpha``) is not used.
    """
    data = np.asarray(image.data, dtype=np.float64)
    if "Z" in image.axes:
        data = data if "C" in image.axes else data[..., None]
    elif data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3) and "Z" not in image.axes:
        raise InputError(f"`{image.path}`: expected an H×W or H×W×C image, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise InputError(f"`{image.path}` contains NaN or infinite values")
    if np.dtype(image.source_dtype).kind != "f" or data.size == 0:
        return data
    if data_range is None:
        if data.min() < 0.0 or data.max() > 1.0:
            raise InputError(
                f"`{image.path}`: float data spans {_span(data)}, outside [0, 1]; give "
                f"{mention('data_range', 'R')} (the width of its scale, e.g. 255), or "
                f"{mention('data_range', 1)} to measure it on the unit scale as it is"
            )
        return data
    return data / data_range


def crop_border(
    data: np.ndarray, border: int, *, path: object = "", spatial: int = 2
) -> np.ndarray:
    """``data`` without ``border`` pixels on every side of its ``spatial`` first axes."""
    if border == 0:
        return data
    sides = data.shape[:spatial]
    if 2 * border >= min(sides):
        raise InputError(
            f"`{border}` leaves nothing of the {'×'.join(map(str, sides))} "
            f"{'volume' if spatial == 3 else 'image'} `{path}`",
            parameter="ignore_border",
        )
    return data[(slice(border, -border),) * spatial]


def _shape_text(data: np.ndarray) -> str:
    return "×".join(str(n) for n in data.shape)


# --- metrics and thresholds ------------------------------------------------------------


def check_thresholds(values: Mapping[str, float], thresholds: Mapping[str, float]) -> list[str]:
    """Names of the metrics whose value breaks its threshold, in registry order.

    A threshold is a maximum for error metrics and a minimum for ``psnr``/``ssim``,
    inclusive at the limit; NaN never passes.
    """
    failures = []
    for name in METRICS:
        if name not in thresholds:
            continue
        value, limit = values[name], thresholds[name]
        holds = value >= limit if METRICS[name].higher_is_better else value <= limit
        if not holds:
            failures.append(name)
    return failures


def _measure(
    reference: np.ndarray,
    candidate: np.ndarray,
    names: list[str],
    thresholds: Mapping[str, float],
    labels: tuple[str, str],
    *,
    per_channel: bool,
    per_slice: bool,
    volume: bool,
) -> list[ComparisonRow]:
    """The pair's row, then one per channel and one per plane (of a volume) if asked."""

    def row(ref, cand, **where) -> ComparisonRow:
        values = compute_metrics(ref, cand, names)
        return ComparisonRow(*labels, values, check_thresholds(values, thresholds), **where)

    rows = [row(reference, candidate)]
    channels = reference.shape[-1] if reference.ndim == 3 + volume else 1
    if per_channel and channels > 1:
        # a volume's channel keeps its axis: the metrics read 4-D arrays as Z×Y×X×C
        pick = (lambda a, c: a[..., c : c + 1]) if volume else (lambda a, c: a[..., c])
        rows += [row(pick(reference, c), pick(candidate, c), channel=c) for c in range(channels)]
    if per_slice and volume:
        rows += [row(reference[z], candidate[z], z=z) for z in range(reference.shape[0])]
    return rows


def _missing_row(pair: Pair) -> ComparisonRow:
    if pair.candidate is None:
        error = f"no candidate named `{pair.reference.stem}` for `{pair.reference}`"
    else:
        error = f"no reference named `{pair.candidate.stem}` for `{pair.candidate}`"
    return ComparisonRow(
        reference=None if pair.reference is None else str(pair.reference),
        candidate=None if pair.candidate is None else str(pair.candidate),
        failures=["missing"],
        error=error,
    )


# --- difference heat maps ----------------------------------------------------------------


def difference_map(
    reference: np.ndarray, candidate: np.ndarray, diff_range: float = DIFF_RANGE
) -> tuple[np.ndarray, float, int]:
    """Heat map of ``|candidate - reference|`` (the largest over channels, and over the
    planes of a Z×Y×X×C volume: a maximum projection along z).

    Returns
    -------
    rgb : (H, W, 3) uint8 ndarray
        ``|difference| / diff_range`` through the inferno table
        (:func:`deconv_cli.pictures.colourize`): black for 0, pale yellow for
        ``diff_range`` and above.
    max_difference : float
        The largest ``|difference|``.
    saturated : int
        Pixels whose difference exceeds ``diff_range`` (shown in the top colour).
    """
    from deconv_cli.pictures import colourize

    difference = np.abs(candidate - reference)
    if difference.ndim == 4:
        difference = difference.max(axis=0)
    if difference.ndim == 3:
        difference = difference.max(axis=-1)
    saturated = int(np.count_nonzero(difference > diff_range))
    return colourize(difference / diff_range), float(difference.max()), saturated


def diff_targets(pairs: Sequence[Pair], diff: str | Path) -> list[Path | None]:
    """Where each pair's heat map goes (None for an incomplete pair).

    ``diff`` is a file for a single pair, unless it is an existing directory, ends
    with a path separator or has no extension; then, and always for several pairs,
    it is a directory receiving ``<candidate stem>.diff.png`` (``-2``, ``-3``...
    appended to repeated stems).
    """
    text = str(diff)
    diff = Path(diff)
    complete = [pair for pair in pairs if pair.reference and pair.candidate]
    as_directory = (
        diff.is_dir() or text.endswith(("/", os.sep)) or not diff.suffix or len(complete) > 1
    )
    if not as_directory:
        if diff.suffix.lower() not in WRITE_EXTENSIONS:
            allowed = ", ".join(f"`{e}`" for e in WRITE_EXTENSIONS)
            raise OutputError(
                f"`{diff}` has an unknown image extension; use {allowed}", parameter="diff"
            )
        return [diff if pair.reference and pair.candidate else None for pair in pairs]
    if diff.exists() and not diff.is_dir():
        raise OutputError(
            f"`{diff}` is a file, but {len(complete)} pairs need a directory", parameter="diff"
        )
    targets: list[Path | None] = []
    used: set[str] = set()
    for pair in pairs:
        if not (pair.reference and pair.candidate):
            targets.append(None)
            continue
        name, n = pair.candidate.stem + DIFF_SUFFIX, 1
        while name in used:
            n += 1
            name = f"{pair.candidate.stem}-{n}{DIFF_SUFFIX}"
        used.add(name)
        targets.append(diff / name)
    return targets


def _check_targets(targets: Sequence[Path | None], pairs: Sequence[Pair], overwrite: bool):
    inputs = {path.resolve() for pair in pairs for path in (pair.reference, pair.candidate) if path}
    for target in targets:
        if target is None:
            continue
        if target.resolve() in inputs:
            raise OutputError(f"`{target}` is an input; choose another path", parameter="diff")
        if target.exists() and not overwrite:
            raise OutputError(
                f"`{target}` exists; use {mention('overwrite', True)} to replace it",
                parameter="diff",
            )
        fs.check_directory(target.parent, create=True, what="diff")


def _write_diff(
    path: Path, rgb: np.ndarray, diff_range: float, overwrite: bool, inputs: Sequence[Path]
) -> None:
    """The heat map with its colour bar (0 to ``diff_range``) on the right."""
    from deconv_cli.io import write_image
    from deconv_cli.pictures import with_colour_bar

    picture = with_colour_bar(rgb, "0", f"{diff_range:.3g}", "|difference|")
    fs.make_directory(path.parent, what="diff")
    # write_image takes values on the [0, 1] scale; rint(k / 255 · 255) gives k back exactly.
    write_image(path, picture / 255.0, dtype="uint8", overwrite=overwrite, inputs=inputs)


# --- the command's core ------------------------------------------------------------------


def compare_images(
    reference: str | Path,
    candidates: Sequence[str | Path],
    *,
    metrics: Sequence[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    data_range: float | None = None,
    ignore_border: int = 0,
    per_channel: bool = False,
    diff: str | Path | None = None,
    diff_range: float | None = None,
    overwrite: bool = False,
    per_slice: bool = False,
    axes: str | None = None,
) -> CompareResult:
    """Compare candidates with a reference (or two directories pairwise).

    Parameters
    ----------
    reference : path
        Reference image, or a directory of them.
    candidates : sequence of paths
        Candidate images, or one directory.
    metrics : sequence of str, optional
        Metric names (default: all); metrics with a threshold are always included.
    thresholds : mapping, optional
        ``{metric: limit}``; a maximum for error metrics, a minimum for psnr/ssim.
    data_range : float, optional
        Width of the value scale of float files, which are divided by it; without
        it float files must lie in [0, 1].
    ignore_border : int
        Pixels cropped from every side before measuring.
    per_channel : bool
        Add one row per channel of multi-channel images.
    diff : path, optional
        Write ``|candidate - reference|`` heat maps (see :func:`diff_targets`).
    diff_range : float, optional
        The difference shown in the top colour of every heat map (on the [0, 1]
        scale, after ``data_range``); default :data:`DIFF_RANGE`.
    overwrite : bool
        Replace existing heat map files.
    per_slice : bool
        Add one row per plane of volumes.
    axes : str, optional
        The axes of the files as stored (:func:`deconv_cli.volumes.read_volume`): a
        ``.npy`` volume needs them; TIFF stacks say their own.

    Returns
    -------
    CompareResult

    Raises
    ------
    InputError
        Unreadable files, shape mismatch (or a volume against an image), float data
        outside [0, 1] without ``data_range``, a border that leaves nothing, images too
        small for SSIM.
    OutputError
        A heat map would overwrite a file (without ``overwrite``) or an input.
    """
    from deconv_cli.volumes import read_volume

    thresholds = dict(thresholds or {})
    for name, limit in thresholds.items():
        if name not in METRICS:
            raise InputError(f"no metric named `{name}` to apply a threshold to")
        if limit is None or math.isnan(limit):
            raise InputError(f"the threshold for `{name}`: `{limit}` is not a number")
    names = resolve_metrics(list(metrics or METRICS) + list(thresholds))
    if data_range is not None and not (math.isfinite(data_range) and data_range > 0):
        raise InputError(f"`{data_range}` must be a positive number", parameter="data_range")
    if ignore_border < 0:
        raise InputError(f"`{ignore_border}` must be 0 or more", parameter="ignore_border")
    diff_range = DIFF_RANGE if diff_range is None else diff_range
    if not (math.isfinite(diff_range) and diff_range > 0):
        raise InputError(f"`{diff_range}` must be a positive number", parameter="diff_range")

    pairs = pair_inputs(reference, candidates)
    targets: Sequence[Path | None] = [None] * len(pairs)
    if diff is not None:
        targets = diff_targets(pairs, diff)
        _check_targets(targets, pairs, overwrite)

    cache: dict[Path, tuple[np.ndarray, str]] = {}

    def read(path: Path) -> tuple[np.ndarray, str]:
        image = read_volume(path, axes=axes, max_channels=None)
        return prepare(image, data_range), image.axes

    def load(path: Path) -> tuple[np.ndarray, str]:
        if path not in cache:
            cache.clear()  # keeps a reference shared by many candidates, nothing more
            cache[path] = read(path)
        return cache[path]

    results = []
    for pair, target in zip(pairs, targets, strict=True):
        if pair.reference is None or pair.candidate is None:
            results.append(PairResult(pair, [_missing_row(pair)]))
            continue
        (ref, ref_axes), (cand, cand_axes) = load(pair.reference), read(pair.candidate)
        volume = "Z" in ref_axes
        if volume != ("Z" in cand_axes):
            raise InputError(
                f"reference `{pair.reference}` has axes {ref_axes}, candidate "
                f"`{pair.candidate}` {cand_axes}: compare a volume with a volume "
                f"(a .npy volume needs {mention('axes')})"
            )
        if ref.shape != cand.shape:
            raise InputError(
                f"shapes differ: reference `{pair.reference}` is {_shape_text(ref)}, candidate "
                f"`{pair.candidate}` is {_shape_text(cand)}; compare needs images of the same size"
            )
        spatial = 3 if volume else 2
        ref = crop_border(ref, ignore_border, path=pair.reference, spatial=spatial)
        cand = crop_border(cand, ignore_border, path=pair.candidate, spatial=spatial)
        labels = (str(pair.reference), str(pair.candidate))
        rows = _measure(
            ref,
            cand,
            names,
            thresholds,
            labels,
            per_channel=per_channel,
            per_slice=per_slice,
            volume=volume,
        )
        written = None
        if target is not None:
            rgb, peak, saturated = difference_map(ref, cand, diff_range)
            _write_diff(target, rgb, diff_range, overwrite, (pair.reference, pair.candidate))
            written = DiffMap(target, peak, diff_range, saturated)
        results.append(PairResult(pair, rows, written))
    return CompareResult(results, names)
