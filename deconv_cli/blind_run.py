"""``deconv blind`` on one image: estimate the kernel, restore, write the kernel.

The kernel is estimated on the image's grey level (the mean of its channels), then
every channel is restored with a non-blind method (``auto`` by default) through
:func:`deconv_cli.inversion.invert`, with the unknown boundary unless another is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from deconv_cli.errors import DeconvError, mention
from deconv_cli.io import Image
from deconv_cli.operators import Geometry
from deconv_cli.process import Allocate, Outcome, Transform, describe_result
from deconv_cli.restore import RestoreOptions

KERNEL_EXTENSIONS = (".npy", ".png", ".tif", ".tiff")


def parse_kernel_size(text: str | None) -> tuple[int, int] | None:
    """``N`` or ``HxW`` (odd sides ≥ 3; an even side is rounded up), or None."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides, default=0) < 3:
        raise DeconvError(f"`{text}` is not N or HxW with sides >= 3", parameter="kernel_size")
    sides = sides * (3 - len(sides))
    return (sides[0] | 1, sides[1] | 1)


def automatic_bound(shape: tuple[int, ...]) -> tuple[int, int]:
    """The kernel bound when none is given: 31 px (camera shake up to ~27 px), less on
    images under 93 px a side (a third of the side, odd)."""
    from deconv_cli.blind import DEFAULT_MAX_SIZE

    side = min(DEFAULT_MAX_SIZE, (min(shape[:2]) // 3 - 1) | 1)
    return (max(side, 3), max(side, 3))


def kernel_path(target: Path | None, source: Path, several: bool) -> Path | None:
    """Where the kernel of ``source`` is written: ``target`` itself for one input, else
    ``target/STEM_kernel.npy``."""
    if target is None:
        return None
    return target / f"{source.stem}_kernel.npy" if several else target


def write_kernel(path: Path, kernel: np.ndarray, *, overwrite: bool) -> None:
    """``.npy``: the exact kernel; an image (``.png``, ``.tif``): scaled to its peak for
    display."""
    from deconv_cli.atomic import atomic_write
    from deconv_cli.io import write_image

    if path.suffix.lower() == ".npy":
        atomic_write(path, lambda tmp: np.save(tmp, kernel), overwrite=overwrite)
    else:
        write_image(path, kernel / kernel.max(), dtype="uint16", overwrite=overwrite)


@dataclass
class Blind(Transform):
    """Estimate the blur kernel of each image, restore it, write the kernel if asked.

    ``kernel_out`` is a file (one input) or a folder (``several``); ``on_progress``
    receives a short text at each stage (single-process runs).
    """

    bound: tuple[int, int] | None
    family: str
    method: str
    geometry: Geometry
    unknown_boundary: bool = True
    kernel_out: Path | None = None
    several: bool = False
    overwrite: bool = False
    on_progress: Callable[[str], None] | None = None
    tile: int | None = None
    volumes: ClassVar[bool] = False

    @property
    def kernel(self):
        """A 2-D kernel's stand-in: the reader takes images of up to 4 channels."""
        from deconv_cli.kernels import load_kernel

        return load_kernel("identity")

    def result_shape(self, shape: tuple[int, ...], spatial: int = 2) -> tuple[int, ...]:
        from deconv_cli.blind import check_bound

        check_bound(self.bound or automatic_bound(shape), shape)
        return shape

    def __call__(self, image: Image, y: np.ndarray, allocate: Allocate | None = None) -> Outcome:
        from deconv_cli import blind, blind_fit
        from deconv_cli.inversion import build_problem, invert
        from deconv_cli.noise_model import estimate_noise_sigma

        gray = y.mean(axis=2) if y.ndim == 3 else y
        gray = gray.astype(np.float64)
        bound = self.bound or automatic_bound(y.shape)
        blind.check_bound(bound, y.shape)
        blind.check_structure(gray, estimate_noise_sigma(gray))
        details = {}
        if self.family == "free":
            kernel = blind.estimate_kernel(gray, bound, progress=self.on_progress).kernel
            params = {}
        else:
            self._say(f"fitting the {self.family} family")
            fit = blind_fit.fit_family(self.family, gray, bound)
            kernel, params = fit.kernel, fit.params
            details["kernel"] = fit.spec
        self._say("measuring the confidence")
        score, basis = blind_fit.confidence(gray, kernel)
        path = kernel_path(self.kernel_out, Path(image.path), self.several)
        if self.family == "free":
            how = "chosen automatically" if self.bound is None else mention("kernel_size")
            details["kernel"] = (
                f"free, {kernel.shape[0]}x{kernel.shape[1]} (bound {bound[0]}x{bound[1]}, {how})"
            )
        if path is not None:
            details["kernel file"] = str(path)
        if params:
            details["kernel parameters"] = ", ".join(f"{k}={v:g}" for k, v in params.items())
        details["confidence"] = f"{score:.2f} ({basis})"
        if path is not None:
            write_kernel(path, kernel, overwrite=self.overwrite)
        self._say(f"restoring with {self.method}")
        problem = build_problem(
            kernel,
            y.shape,
            self.geometry,
            unknown_boundary=self.unknown_boundary,
            dtype=y.dtype,
        )
        result = invert(y, problem, self.method, RestoreOptions(), source_dtype=image.source_dtype)
        details.update(describe_result(result))
        return Outcome(result.image, problem.op, details)

    def _say(self, text: str) -> None:
        if self.on_progress is not None:
            self.on_progress(text)


def summary_record(report) -> dict:
    """One ``--json`` object from an item's report: input, output, kernel (the family's
    spec, else the file it was written to, else null), params, confidence."""
    details = report.details
    params = {}
    if "kernel parameters" in details:
        for pair in details["kernel parameters"].split(", "):
            name, value = pair.split("=")
            params[name] = float(value)
    confidence = details.get("confidence", "nan").split(" ", 1)
    return {
        "input": str(report.input),
        "output": str(report.output),
        "kernel": details.get("kernel file") if not params else details["kernel"],
        "params": params,
        "confidence": float(confidence[0]),
        "confidence_basis": confidence[1].strip("()") if len(confidence) > 1 else None,
        "method": details.get("method"),
        "seconds": round(report.seconds, 3),
    }


def check_kernel_out(path: str | None, several: bool, overwrite: bool) -> Path | None:
    """Refuse, before the work, a ``--kernel-out`` that cannot be written."""
    if path is None:
        return None
    from deconv_cli import fs

    target = Path(path)
    if several:
        if target.suffix.lower() in KERNEL_EXTENSIONS:
            raise DeconvError(
                f"`{path}` names a file, but there are several inputs: give a folder",
                parameter="kernel_out",
            )
        target.mkdir(parents=True, exist_ok=True)
        return target
    if target.suffix.lower() not in KERNEL_EXTENSIONS:
        raise DeconvError(
            f"`{path}`: give a file ending in {', '.join(KERNEL_EXTENSIONS)}",
            parameter="kernel_out",
        )
    fs.check_writable_file(target, overwrite=overwrite, what="kernel_out")
    return target
