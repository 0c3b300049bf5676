"""Kernels: validated kernel arrays from family specs, files and arrays.

A kernel is a 2-D array ``(kh, kw)`` applied to each image channel alike, or a 4-D
conv-layer bank ``(C_out, C_in/groups, kh, kw)`` (a grouped layer's weight as stored),
or a 3-D volume kernel ``(kz, ky, kx)`` (a microscope PSF: :mod:`deconv_cli.psf`).
:func:`load_kernel` turns a spec string into a validated, read-only :class:`Kernel`: a
family spec (the families, their conventions and their parser are in
:mod:`deconv_cli.kernel_families`), a kernel file, or a tensor of a model file
(:mod:`deconv_cli.models`).

Normalization
    Kernel files are used exactly as stored (a conv layer's weights are not a PSF)
    unless ``normalize=True`` divides them by their sum; a zero-sum kernel is never
    divided by its sum.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deconv_cli import fs
from deconv_cli.errors import InputError, KernelError, mention
from deconv_cli.formats import READ_EXTENSIONS
from deconv_cli.kernel_families import (
    FAMILIES,
    SHAKE_SAMPLES,
    build,
    did_you_mean,
    shake_trajectory,
)

__all__ = [
    "FILE_SUFFIXES",
    "IMAGE_SUFFIXES",
    "SHAKE_SAMPLES",
    "TEXT_SUFFIXES",
    "Kernel",
    "family_table",
    "kernel_from_array",
    "kernel_slices",
    "load_kernel",
    "shake_trajectory",
]

TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
IMAGE_SUFFIXES = tuple(ext for ext in READ_EXTENSIONS if ext != ".npy")
"""Kernel images: every format deconv reads (:mod:`deconv_cli.formats`), made grey."""
FILE_SUFFIXES = (".npy", *TEXT_SUFFIXES, *IMAGE_SUFFIXES)

_SHAPES_ALLOWED = (
    "2-D (kh, kw), 1-D (read as a 1xN row), a 3-D volume (kz, ky, kx) "
    "or a 4-D bank (C_out, C_in, kh, kw)"
)


@dataclass(frozen=True, eq=False)
class Kernel:
    """A validated kernel.

    Attributes
    ----------
    array : (kh, kw), (kz, ky, kx) or (C_out, C_in/groups, kh, kw) ndarray
        float64, C-contiguous and read-only.
    description : str
        A canonical spec (``"gaussian:sigma=2,size=13"``), or ``"file NAME (SHAPE)"``.
    family : str or None
        The family name, or ``None`` for a kernel read from a file.
    layer : deconv_cli.models.Layer or None
        The model-file layer it was read from (``FILE#NAME``), with its geometry.
    spacing : tuple of float or None
        A volume kernel's voxel size ``(dz, dy, dx)`` in µm when its model knows it.
    groups : int
        A bank's groups (a grouped conv layer's): ``C_in`` and ``C_out`` split into
        ``groups`` blocks, each output block reading only its input block. 1 otherwise.
    """

    array: np.ndarray
    description: str
    family: str | None = field(default=None)
    layer: object = field(default=None, repr=False)
    spacing: tuple[float, ...] | None = field(default=None)
    groups: int = 1

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim not in (2, 3, 4) or array.size == 0:
            raise KernelError(
                f"kernel `{self.description}` has shape {array.shape}: a kernel must be "
                f"{_SHAPES_ALLOWED.replace('1-D (read as a 1xN row), ', '')}, and not empty"
            )
        if array.dtype != np.float64 or not array.flags.c_contiguous or array.flags.writeable:
            array = np.array(array, dtype=np.float64, order="C", copy=True)
            array.setflags(write=False)
        object.__setattr__(self, "array", array)
        if self.groups != 1 and (array.ndim != 4 or array.shape[0] % self.groups):
            raise KernelError(
                f"kernel `{self.description}`: groups `{self.groups}` must divide the "
                "output channels of a 4-D bank"
            )

    @property
    def is_bank(self) -> bool:
        """Whether this is a 4-D conv-layer bank ``(C_out, C_in, kh, kw)``."""
        return self.array.ndim == 4

    @property
    def is_volume(self) -> bool:
        """Whether this is a 3-D volume kernel ``(kz, ky, kx)``."""
        return self.array.ndim == 3

    @property
    def max_channels(self) -> int | None:
        """The most channels an image may have: 4 (:data:`deconv_cli.formats.MAX_CHANNELS`), or
        any number for a bank (its operator checks the count the bank takes)."""
        from deconv_cli.formats import MAX_CHANNELS

        return None if self.is_bank else MAX_CHANNELS

    def operator(self, input_shape: tuple[int, ...], geometry, **options):
        """The :class:`~deconv_cli.operators.ConvOperator` of this kernel (with its
        groups) on ``input_shape``; ``options`` are the operator's keywords."""
        from deconv_cli.operators import ConvOperator

        return ConvOperator(self.array, input_shape, geometry, groups=self.groups, **options)

    @property
    def spatial_shape(self) -> tuple[int, int]:
        """``(kh, kw)``: the shape of one spatial kernel."""
        kh, kw = self.array.shape[-2:]
        return (int(kh), int(kw))


def load_kernel(spec: str, *, normalize: bool = False, volume: bool = False) -> Kernel:
    """Parse ``family:param=value,...`` (or a bare ``family``), or load a file path.

    Parameters
    ----------
    spec : str
        A family spec such as ``"gaussian:sigma=2"``, ``"box:size=5x3"``,
        ``"motion:length=9,angle=30"``, ``"laplacian"``; or the path of a
        ``.npy``, text/CSV (``.csv .txt .tsv .dat``) or image file. A bare word
        is a family if it names one, else a path. See :func:`family_table`. Or a
        tensor or layer of a model file, ``FILE#NAME`` (:mod:`deconv_cli.models`).
    normalize : bool
        Divide the kernel by its sum. Blur families already sum to 1; a
        zero-sum kernel cannot be normalized.
    volume : bool
        Accept a 3-D volume kernel ``(kz, ky, kx)`` (a TIFF stack, a 3-D ``.npy``,
        ``gaussian`` with ``sigma_z``, ``widefield``); without it one is refused,
        for the commands that process 2-D images.

    Returns
    -------
    Kernel

    Raises
    ------
    KernelError
        For an unknown family or parameter, a malformed or out-of-range value,
        a missing, unreadable or pickled file, an unusable shape, NaN/Inf
        entries, an empty or all-zero kernel.

    Notes
    -----
    Files: ``.npy`` is read with ``allow_pickle=False``. Text files are read with
    ``np.loadtxt`` (comma-separated if the file has a comma, else whitespace;
    ``#`` starts a comment). Images are read with imageio; integer images are
    divided by their dtype's maximum, an RGB(A) PSF image becomes gray as the mean
    of its R, G, B channels (alpha is dropped). A 1-D array is a 1xN row kernel.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise KernelError(
            "kernel spec is empty; give a family such as `gaussian:sigma=2` or a file path "
            "(see `deconv kernels`)"
        )
    spec = spec.strip()
    from deconv_cli.models import load_model_kernel

    model_kernel = load_model_kernel(spec, normalize=normalize)
    if model_kernel is not None:
        return model_kernel
    name, sep, params = spec.partition(":")
    family_name = name.strip().lower()
    if family_name in FAMILIES:
        family = FAMILIES[family_name]
        array, description, spacing = build(family, params if sep else "")
        kernel = _finish(
            array, description, family.name, normalize, f"kernel `{family.name}`", spacing
        )
        return _volume_checked(kernel, volume, f"kernel `{kernel.description}`")
    path = Path(spec).expanduser()
    fs.probe(path, KernelError, "kernel", follow=True)  # a name too long, a link loop...
    if path.is_file():
        return _volume_checked(_load_file(path, spec, normalize), volume, f"kernel file `{spec}`")
    if path.exists():
        raise KernelError(f"kernel file `{spec}` is not a regular file")
    if _looks_like_path(spec):
        raise KernelError(f"kernel file `{spec}` not found")
    families = ", ".join(FAMILIES)
    hint = did_you_mean(family_name, FAMILIES)
    if sep:
        raise KernelError(f"unknown kernel family `{name.strip()}`;{hint} families: {families}")
    raise KernelError(
        f"kernel `{spec}` is neither a kernel family nor an existing file;{hint} "
        f"families: {families}"
    )


def kernel_from_array(array, *, normalize: bool = False, name: str = "kernel") -> Kernel:
    """A kernel from an array in memory, validated as kernel files are.

    Parameters
    ----------
    array : array_like
        2-D ``(kh, kw)``, 1-D (a ``1xN`` row) or a 4-D bank ``(C_out, C_in, kh, kw)``;
        real, finite, not all zero.
    normalize : bool
        Divide the kernel by its sum.
    name : str
        What error messages call the array (the caller's parameter name).

    Returns
    -------
    Kernel
        Described as ``array (SHAPE)``.

    Raises
    ------
    KernelError
        For complex or non-numeric values, an unusable shape, NaN/Inf entries, an
        empty or all-zero array, or a zero-sum kernel to normalize.
    """
    where = f"`{name}`"
    array = _validate_array(np.asarray(array), where)
    shape = "x".join(str(n) for n in array.shape)
    return _volume_checked(_finish(array, f"array ({shape})", None, normalize, where), False, where)


def _volume_checked(kernel: Kernel, volume: bool, where: str) -> Kernel:
    if kernel.is_volume and not volume:
        shape = "x".join(str(n) for n in kernel.array.shape)
        raise KernelError(
            f"{where} is a 3-D volume kernel ({shape}); this command "
            "processes 2-D images (see `deconv kernels show` for volume kernels)"
        )
    return kernel


def family_table() -> list[dict]:
    """Describe every family, for ``deconv kernels``.

    Returns
    -------
    list of dict
        One per family, in display order, with keys ``name`` (str), ``params``
        (list of ``(name, default, help)`` string triples; the default as
        displayed, e.g. ``"2*ceil(3*sigma)+1"``) and ``summary`` (str).
    """
    return [
        {
            "name": fam.name,
            "params": [(p.name, p.default_text, p.help) for p in fam.params],
            "summary": fam.summary,
        }
        for fam in FAMILIES.values()
    ]


def kernel_slices(kernel: Kernel) -> list[tuple[str, np.ndarray, float]]:
    """Split a kernel into its spatial slices, for display.

    Returns
    -------
    list of (label, 2-D ndarray, sum)
        One entry (label ``""``) for a 2-D kernel; one per ``(out, in)`` pair of a
        bank (a grouped bank: the pairs within a group), labelled ``"out o, in i"``;
        for a volume its central plane ``(ky, kx)`` and its axial slice ``(kz, kx)``
        through the central row.
    """
    if kernel.is_volume:
        a = kernel.array
        cz, cy = a.shape[0] // 2, a.shape[1] // 2
        return [
            (f"plane z={cz} of {a.shape[0]}, y x", a[cz], float(a[cz].sum())),
            (f"axial slice y={cy} of {a.shape[1]}, z x", a[:, cy], float(a[:, cy].sum())),
        ]
    if not kernel.is_bank:
        return [("", kernel.array, float(kernel.array.sum()))]
    c_out, c_in = kernel.array.shape[:2]
    per = c_out // kernel.groups  # output block o // per reads inputs from (o // per) * c_in
    return [
        (f"out {o}, in {o // per * c_in + i}", kernel.array[o, i], float(kernel.array[o, i].sum()))
        for o in range(c_out)
        for i in range(c_in)
    ]


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or Path(spec).suffix.lower() in FILE_SUFFIXES


def _finish(
    array: np.ndarray,
    description: str,
    family: str | None,
    normalize: bool,
    where: str,
    spacing: tuple[float, ...] | None = None,
) -> Kernel:
    if normalize:
        total = float(array.sum())
        if abs(total) <= 1e-12 * float(np.abs(array).sum()):
            raise KernelError(
                f"{where} sums to 0 (a zero-sum kernel, e.g. an edge detector) "
                "and cannot be normalized"
            )
        array = array / total
        if family is None:
            description = description[:-1] + ", normalized)"
    return Kernel(array, description, family, spacing=spacing)


# --------------------------------------------------------------------------- files


def _load_file(path: Path, spec: str, normalize: bool) -> Kernel:
    where = f"kernel file `{spec}`"
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise KernelError(
            f"{where}: unsupported suffix `{suffix or '(none)'}`; use one of "
            + ", ".join(FILE_SUFFIXES)
        )
    from deconv_cli.npyfile import load_npy

    try:
        if suffix == ".npy":
            array = load_npy(path)
        elif suffix in TEXT_SUFFIXES:
            array = _read_text(path, where)
        else:
            array = _read_image(path)
    except InputError as err:
        message, named = err.detail, f"`{path}`"  # keeps its mentions for the reader to say
        if err.parameter:
            message = f"{mention(err.parameter)}: {message}"
        if message.startswith(named):  # the reader names the file: say it once
            rest = message[len(named) :]
            message = rest[1:].lstrip() if rest.startswith(":") else "it" + rest
        raise KernelError(f"{where}: {message}") from None
    array = _validate_array(array, where)
    shape = "x".join(str(n) for n in array.shape)
    return _finish(array, f"file {spec} ({shape})", None, normalize, where)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _read_text(path: Path, where: str) -> np.ndarray:
    fs.note_input(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise KernelError(f"{where} cannot be read: {fs.reason(err)}") from None
    except UnicodeDecodeError as err:
        raise KernelError(f"{where} cannot be read as text: {_first_line(err)}") from None
    delimiter = "," if "," in text else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            return np.loadtxt(path, delimiter=delimiter, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as err:
        raise KernelError(f"{where} is not a numeric matrix: {_first_line(err)}") from None


def _read_image(path: Path) -> np.ndarray:
    """A PSF image or TIFF stack on the [0, 1] scale (deconv's volume reader), made gray."""
    from deconv_cli.volumes import read_volume

    image = read_volume(path)
    data = image.data.astype(np.float64)
    return data.mean(axis=-1) if image.axes.endswith("C") else data


def _validate_array(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype == np.bool_:
        array = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.complexfloating):
        raise KernelError(f"{where} holds complex values (dtype {array.dtype}); a kernel is real")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise KernelError(f"{where} holds non-numeric data (dtype {array.dtype})")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim not in (2, 3, 4):
        raise KernelError(f"{where} has shape {array.shape}; allowed: {_SHAPES_ALLOWED}")
    if array.size == 0:
        raise KernelError(f"{where} is empty (shape {array.shape})")
    array = np.asarray(array, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise KernelError(f"{where} contains {bad} NaN/Inf value(s); a kernel must be finite")
    if not array.any():
        raise KernelError(f"{where} is all zeros")
    return array
