"""The public Python API: deconv's commands as functions on arrays.

Each function is a thin face over the library the commands run (:mod:`deconv_cli.process`,
:mod:`deconv_cli.inversion`, :mod:`deconv_cli.analysis`, :mod:`deconv_cli.metrics`,
:mod:`deconv_cli.kernels`, :mod:`deconv_cli.io`): the same data, kernel and keywords
give the same numbers as the command line with the same flags. Everything after the
data and the kernel is keyword-only; the geometry keywords are named like the flags.

Conventions
-----------
- Images are float arrays ``(H, W)`` or ``(H, W, C)``, channels last, on deconv's
  ``[0, 1]`` scale. Integer arrays are refused (their scale is ambiguous): read files
  with :func:`read_image`, which scales them, or divide by the dtype's maximum.
  An :class:`~deconv_cli.io.Image` from :func:`read_image` is accepted wherever an
  array is, and carries what the command would know of the file (its pixel type;
  for ``invert``, a JPEG's quantization tables). Its alpha channel is not filtered,
  as on the command line: write it back with ``write_image(..., alpha=image.alpha)``.
- float32 data is computed in float32, anything else in float64, as the CLI does.
- A kernel is a spec (``"gaussian:sigma=2"``), a file path, an array, or a
  :class:`~deconv_cli.kernels.Kernel` from :func:`load_kernel`.
- Bad arguments raise :class:`~deconv_cli.errors.DeconvError` subclasses (they are
  ``ValueError`` s) with a one-line message.

Size: about 700 lines, more than half of them the functions' numpydoc (every
parameter, and examples that run as doctests). The code is one thin function per
command; splitting it would scatter the public API over modules for no other seam.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deconv_cli.errors import DeconvError, GeometryError, InputError, KernelError, spoken
from deconv_cli.io import Image, WriteResult
from deconv_cli.kernels import Kernel

# The geometry keywords' documentation, shared by every function that builds an operator.
_GEOMETRY_DOC = """mode : {"same", "full", "valid"}, optional
        Extent of the output (default ``same``; ``valid`` when ``padding`` is given).
    boundary : str
        What lies outside the image: ``constant``, ``reflect`` (default), ``mirror``,
        ``nearest``, ``wrap``, or an alias (``zero``, ``edge``, ``periodic`` ...).
    correlate : bool
        Cross-correlate (no kernel flip), as deep-learning conv layers do.
    stride : int, (int, int) or str
        Keep every stride-th output sample (``2``, ``(2, 3)`` or ``"2x3"``).
    dilation : int, (int, int) or str
        Insert ``dilation - 1`` zeros between kernel taps.
    padding : int, (int, int) or str, optional
        Pad with the boundary fill, then ``valid`` (conv-layer style)."""


def _documented(function):
    """Put the geometry keywords' documentation where the docstring says ``{geometry}``."""
    function.__doc__ = function.__doc__.replace("{geometry}", _GEOMETRY_DOC)
    return function


def _geometry(mode, boundary, correlate, stride, dilation, padding):
    from deconv_cli.operators import Geometry

    return Geometry.create(
        mode=mode,
        boundary=boundary,
        correlate=correlate,
        stride=stride,
        dilation=dilation,
        padding=padding,
    )


def _kernel(kernel) -> Kernel:
    return kernel if isinstance(kernel, Kernel) else load_kernel(kernel)


def _image(data, name: str, kernel: Kernel | None = None) -> Image:
    """``data`` as an :class:`Image`: an Image as it is; an array checked as files are read
    (float, finite, H×W or H×W×C; at most 4 channels unless the kernel is a bank)."""
    if isinstance(data, Image):
        return data
    array = np.asarray(data)
    if array.dtype.kind != "f":
        raise InputError(
            f"{name}: pixel type `{array.dtype}` is not a float; integer arrays have no "
            "agreed scale: divide by the type's maximum, or read files with read_image"
        )
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise InputError(f"{name}: shape {array.shape} is not H×W or H×W×C (channels last)")
    limit = kernel.max_channels if kernel is not None else None
    if array.ndim == 3 and limit is not None and array.shape[2] > limit:
        raise InputError(
            f"{name}: shape {array.shape} has {array.shape[2]} channels, more than "
            f"{limit}; a stack or a channels-first array is not an image"
        )
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise InputError(f"{name}: {bad} NaN/Inf values; deconv needs finite values")
    return Image(array, None, array.dtype, Path(f"<{name}>"))


def _run(transform, image: Image):
    """Apply a :class:`~deconv_cli.process.Transform` as the command does, in its dtype."""
    from deconv_cli.process import compute_dtype

    return transform(image, image.data.astype(compute_dtype(image, None), copy=False))


# --------------------------------------------------------------------------- kernels, files


def load_kernel(spec, *, normalize: bool = False) -> Kernel:
    """A kernel from a spec, a file or an array: what ``-k SPEC --normalize`` loads.

    Parameters
    ----------
    spec : str, path or array_like
        A family spec such as ``"gaussian:sigma=2"``, ``"motion:length=9,angle=30"``
        (``deconv kernels`` lists them); the path of a ``.npy``, text/CSV or image
        file; or an array: 2-D ``(kh, kw)``, 1-D (a row) or a 4-D conv-layer bank
        ``(C_out, C_in, kh, kw)``.
    normalize : bool
        Divide the kernel by its sum (named blur families always sum to 1).

    Returns
    -------
    Kernel
        ``.array`` (float64, read-only), ``.description`` (the canonical spec).

    Raises
    ------
    KernelError
        An unknown family or parameter, a value out of range, a missing or unreadable
        file, an unusable shape, NaN/Inf entries, an all-zero kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from deconv_cli import load_kernel
    >>> k = load_kernel("gaussian:sigma=1")
    >>> k.description
    'gaussian:sigma=1,size=7'
    >>> y, x = np.mgrid[-3:4, -3:4]
    >>> g = np.exp(-(x**2 + y**2) / 2)
    >>> bool(np.allclose(k.array, g / g.sum()))
    True
    >>> load_kernel([1.0, 2.0, 1.0], normalize=True).array
    array([[0.25, 0.5 , 0.25]])
    """
    from deconv_cli import kernels

    if isinstance(spec, str | os.PathLike):
        return kernels.load_kernel(os.fspath(spec), normalize=normalize)
    if isinstance(spec, np.ndarray | list | tuple):
        return kernels.kernel_from_array(spec, normalize=normalize, name="spec")
    raise KernelError(
        f"spec: a {type(spec).__name__} is not a kernel spec, a path or an array "
        "(e.g. `gaussian:sigma=2`)"
    )


def read_image(path, *, max_channels: int | None = 4) -> Image:
    """Read an image file or ``.npy`` array, scaled to ``[0, 1]`` floats and validated.

    The format is recognised from the file's first bytes; integer pixels are divided
    by their type's maximum; the alpha channel is split off. The rules are those of
    every command (conventions: data rules).

    Parameters
    ----------
    path : str or path
    max_channels : int or None
        The most channels accepted (default 4); None for ``.npy`` feature maps.

    Returns
    -------
    Image
        ``.data`` (float64, or float32 for float32/float16 files), ``.alpha``
        (or None), ``.source_dtype`` (the pixel type stored), ``.path``.

    Raises
    ------
    InputError
        Missing, unreadable, corrupt or pickled files, unsupported pixel types or
        shapes, NaN/Inf pixels, images above the pixel limit.

    Examples
    --------
    >>> import tempfile, os
    >>> import numpy as np
    >>> from deconv_cli import read_image, write_image
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "ramp.png")
    >>> ramp = np.linspace(0, 1, 12).reshape(3, 4)
    >>> write_image(path, ramp, dtype="uint8").dtype
    dtype('uint8')
    >>> image = read_image(path)
    >>> image.source_dtype, image.data.dtype
    (dtype('uint8'), dtype('float64'))
    >>> bool(np.array_equal(image.data, np.round(ramp * 255) / 255))
    True
    """
    from deconv_cli import io

    return io.read_image(path, max_channels=max_channels)


def write_image(
    path,
    data,
    *,
    dtype: str | None = None,
    alpha: np.ndarray | None = None,
    overwrite: bool = False,
) -> WriteResult:
    """Write an image or array atomically, in the format its extension names.

    The file appears complete or not at all (a temporary file in the same folder is
    written, synced and renamed). Integer outputs are ``round(value · max)`` clipped
    to the type's range; float outputs (TIFF, ``.npy``) are written exactly.

    Parameters
    ----------
    path : str or path
        ``.png .jpg .jpeg .bmp .tif .tiff .npy``.
    data : ndarray or Image
        ``(H, W)`` or ``(H, W, C)``; an :class:`Image` writes its pixels in its
        source type (as the commands do) and its alpha.
    dtype : {"uint8", "uint16", "float32", "float64"}, optional
        Must fit the format. Default: the data's type (an Image's source type) where
        the format holds it, else uint16 for PNG, uint8 for JPEG and BMP.
    alpha : (H, W) ndarray, optional
        An alpha channel, written where the format holds one.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    WriteResult
        ``.path``, ``.dtype`` written, ``.clipped`` pixels, ``.alpha_dropped``.

    Raises
    ------
    OutputError
        An unknown extension, a type or channel count the format cannot hold, an
        existing file without ``overwrite``, an unwritable place.

    Examples
    --------
    >>> import tempfile, os
    >>> import numpy as np
    >>> from deconv_cli import write_image
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> x = np.array([[0.25, 1.5], [-0.5, 0.0]])
    >>> write_image(path, x).dtype
    dtype('float64')
    >>> bool(np.array_equal(np.load(path), x))
    True
    >>> write_image(path.replace(".npy", ".png"), x, dtype="uint8").clipped
    2
    """
    from deconv_cli import io

    source_dtype = None
    if isinstance(data, Image):
        image = data
        data, source_dtype = image.data, image.source_dtype
        alpha = image.alpha if alpha is None else alpha
    return io.write_image(
        path, data, dtype=dtype, source_dtype=source_dtype, alpha=alpha, overwrite=overwrite
    )


# --------------------------------------------------------------------------- the operator


@_documented
def convolve(
    image,
    kernel,
    *,
    mode: str | None = None,
    boundary: str = "reflect",
    correlate: bool = False,
    stride=1,
    dilation=1,
    padding=None,
    noise: str | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """``y = A x``: blur an image, as ``deconv convolve`` does, plus seeded noise.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray, or Image
    kernel : str, path, array_like or Kernel
        A 2-D kernel is applied to each channel; a 4-D bank ``(C_out, C_in, kh, kw)``
        maps ``C_in`` channels to ``C_out``, as a conv layer.
    {geometry}
    noise : str, optional
        Noise added after blurring: ``gaussian:sigma=S``, ``poisson:peak=P``,
        ``quantize:bits=B``, ``jpeg:quality=Q``, steps joined with ``+``.
    seed : int, optional
        Seed of the noise (reproducible data).

    Returns
    -------
    ndarray
        The blurred image (float32 for float32 input, else float64).

    Raises
    ------
    DeconvError
        Bad geometry values, a kernel larger than the image in ``valid`` mode, a bad
        noise spec, an image the kernel does not fit (channels of a bank).

    Examples
    --------
    An impulse returns the kernel (``full`` mode shows all of it), and any image
    gives what ``scipy.signal.convolve2d`` gives:

    >>> import numpy as np
    >>> from scipy.signal import convolve2d
    >>> from deconv_cli import convolve, load_kernel
    >>> k = load_kernel("motion:length=5,angle=30")
    >>> kh, kw = k.array.shape
    >>> impulse = np.zeros((9, 9))
    >>> impulse[0, 0] = 1
    >>> y = convolve(impulse, k, mode="full", boundary="constant")
    >>> bool(np.allclose(y[:kh, :kw], k.array))
    True
    >>> x = np.random.default_rng(0).random((16, 16))
    >>> bool(np.allclose(convolve(x, k, mode="full", boundary="constant"), convolve2d(x, k.array)))
    True
    """
    from deconv_cli.noise import parse_noise
    from deconv_cli.process import Convolve

    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise DeconvError(f"seed: `{seed}` is not a whole number")
    if seed is not None and seed < 0:
        raise DeconvError(f"seed: `{seed}` must be 0 or more")
    kernel = _kernel(kernel)
    geometry = _geometry(mode, boundary, correlate, stride, dilation, padding)
    transform = Convolve(kernel, geometry, noise=parse_noise(noise), seed=seed)
    return _run(transform, _image(image, "image", kernel)).data


@_documented
def transpose(
    data,
    kernel,
    *,
    mode: str | None = None,
    boundary: str = "reflect",
    correlate: bool = False,
    stride=1,
    dilation=1,
    padding=None,
    output_shape=None,
) -> np.ndarray:
    """``x = Aᵀ y``: the exact adjoint of :func:`convolve` with the same keywords.

    This is deep learning's ``conv_transpose2d``; it restores the shape, not the
    values (use :func:`invert` for that).

    Parameters
    ----------
    data : ndarray or Image
        An array of the shape :func:`convolve` returns.
    kernel : str, path, array_like or Kernel
    {geometry}
    output_shape : (int, int) or str, optional
        ``(H, W)`` of the image to return where a stride maps several shapes to
        the data's (default: the smallest, as ``conv_transpose2d``).

    Returns
    -------
    ndarray

    Examples
    --------
    The adjoint's defining identity ``⟨A x, y⟩ = ⟨x, Aᵀ y⟩`` (the dot test), with a
    stride, where ``output_shape`` says which of the two input sizes is meant:

    >>> import numpy as np
    >>> from deconv_cli import convolve, transpose
    >>> rng = np.random.default_rng(1)
    >>> x = rng.random((12, 12))
    >>> ax = convolve(x, "box:size=3", stride=2)
    >>> y = rng.random(ax.shape)
    >>> aty = transpose(y, "box:size=3", stride=2, output_shape=(12, 12))
    >>> aty.shape
    (12, 12)
    >>> bool(np.isclose(np.vdot(ax, y), np.vdot(x, aty), rtol=1e-12))
    True
    """
    from deconv_cli.operators import parse_pair
    from deconv_cli.process import Transpose

    kernel = _kernel(kernel)
    geometry = _geometry(mode, boundary, correlate, stride, dilation, padding)
    shape = parse_pair(output_shape, "output_shape")
    return _run(Transpose(kernel, geometry, shape), _image(data, "data", kernel)).data


# --------------------------------------------------------------------------- deconvolution

# invert's method keywords: each is a RestoreOptions field a method may take.
_METHOD_OPTIONS = ("iterations", "tol", "reg", "nsr", "rcond", "lam", "tv", "noise_sigma")


@_documented
def invert(
    data,
    kernel,
    *,
    method: str = "auto",
    iterations: int | None = None,
    tol: float | None = None,
    reg: float | None = None,
    nsr: float | None = None,
    rcond: float | None = None,
    lam: float | None = None,
    tv: float | None = None,
    noise_sigma: float | None = None,
    mode: str | None = None,
    boundary: str = "reflect",
    correlate: bool = False,
    stride=1,
    dilation=1,
    padding=None,
    output_shape=None,
    clip: bool = False,
    reference: np.ndarray | None = None,
    callback=None,
):
    """Recover ``x`` from ``y ≈ A x``: true deconvolution, as ``deconv invert`` does.

    Parameters
    ----------
    data : ndarray or Image
        The blurred image. An :class:`Image` read from a JPEG file lends its
        quantization tables to the noise estimate, as on the command line.
    kernel : str, path, array_like or Kernel
        The kernel and the geometry keywords that produced the blur; ``boundary``
        may also be ``"unknown"`` (see Notes).
    method : str
        ``auto`` (default: chooses by the operator and the measured noise, and says
        why in ``notes``), ``inverse``, ``pinv``, ``tikhonov``, ``wiener``,
        ``richardson-lucy``, ``tv``, ``cgls``, ``lsqr`` ...
        (``deconv invert --help`` lists them with the options each takes).
    iterations, tol : optional
        Most iterations, and the stopping tolerance (``0``: exactly ``iterations``).
    reg, nsr, rcond, lam, tv : float, optional
        The weight of the method that takes it: Tikhonov's λ, Wiener's
        noise-to-signal ratio, the pseudo-inverse's cutoff, TV's λ, the TV term of
        Richardson-Lucy. Unset: chosen automatically (GCV, the discrepancy principle).
    noise_sigma : float, optional
        The noise's standard deviation, if known (default: estimated from the data).
    {geometry}
    output_shape : (int, int) or str, optional
        ``(H, W)`` of the image to recover where a stride maps several to one.
    clip : bool
        Clip the result to ``[0, 1]``.
    reference : ndarray, optional
        The sharp image: ``callback`` records then carry PSNR and SSIM.
    callback : callable, optional
        ``callback(record)`` after each iteration of an iterative method, with an
        :class:`~deconv_cli.inversion.IterationRecord` (``iteration``, ``residual``,
        ``psnr``, ``ssim``, ``seconds``).

    Returns
    -------
    RestoreResult
        What the command's summary reports: ``.image`` (the recovered image),
        ``.method`` (the one that ran: ``auto`` names its choice), ``.params`` (the
        parameters used, automatic ones included), ``.iterations``, ``.converged``,
        ``.residual`` (``‖A x − y‖ / ‖y‖``) and ``.notes`` (sentences: why ``auto``
        chose, warnings).

    Raises
    ------
    DeconvError
        An unknown method, an option the method does not take, a value out of its
        range, an operator with a null space for ``inverse``, bad geometry.

    Notes
    -----
    ``boundary="unknown"`` is the model for photographs: the data is a crop of a
    larger blurred scene. The method solves for the scene extended by the kernel's
    extent, with the data term only on the observed pixels, and returns the observed
    frame (``mode`` must be ``same``, without stride or padding).

    Examples
    --------
    From noiseless data of an injective operator, the exact inverse recovers the
    image to rounding:

    >>> import numpy as np
    >>> from deconv_cli import convolve, invert
    >>> x = np.random.default_rng(2).random((32, 32))
    >>> y = convolve(x, "gaussian:sigma=1", boundary="wrap")
    >>> result = invert(y, "gaussian:sigma=1", boundary="wrap", method="inverse")
    >>> result.method
    'inverse'
    >>> bool(np.abs(result.image - x).max() < 1e-6)
    True
    """
    from dataclasses import replace

    from deconv_cli.operators import parse_pair
    from deconv_cli.process import Invert
    from deconv_cli.restore import OPTIONS, RestoreOptions, get_method

    chosen = get_method(method)
    values = (iterations, tol, reg, nsr, rcond, lam, tv, noise_sigma)
    given = dict(zip(_METHOD_OPTIONS, values, strict=True))
    for name, value in given.items():  # as the command line parses them; the rest with the data
        if value is not None:
            OPTIONS[name].check(value, scale=None)
    chosen.check_taken(given)
    kernel = _kernel(kernel)
    unknown = boundary == "unknown"
    geometry = _geometry(
        mode, "reflect" if unknown else boundary, correlate, stride, dilation, padding
    )
    transform = Invert(
        kernel,
        geometry,
        chosen.name,
        RestoreOptions(**given),
        unknown_boundary=unknown,
        output_shape=parse_pair(output_shape, "output_shape"),
        reference=None if reference is None else _image(reference, "reference").data,
        clip=clip,
        on_iteration=callback,
    )
    outcome = _run(transform, _image(data, "data", kernel))
    notes = [spoken(note) for note in outcome.restored.notes]
    return replace(outcome.restored, image=outcome.data, notes=notes)


# --------------------------------------------------------------------------- measuring


@_documented
def analyze(
    kernel,
    *,
    shape,
    mode: str | None = None,
    boundary: str = "reflect",
    correlate: bool = False,
    stride=1,
    dilation=1,
    padding=None,
    noise_sigma: float | None = None,
    bits: int | None = None,
):
    """Is the operator invertible, how well, and what will noise do to its inverse?

    As ``deconv analyze``: rank and null space, extreme singular values, condition
    number, the predicted RMSE of the exact (or pseudo-) inverse at the noise level,
    and a verdict, each with how it was obtained (exact by FFT, DCT or dense SVD, or
    an iterative estimate).

    Parameters
    ----------
    kernel : str, path, array_like or Kernel
    shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``: the image the operator acts on.
    {geometry}
    noise_sigma : float, optional
        Standard deviation of white noise in the data, on the ``[0, 1]`` scale.
    bits : int, optional
        Or: the data is rounded to ``bits`` bits (``σ = q/√12``); default 8.

    Returns
    -------
    Analysis
        Dataclass with ``rank``, ``nullity``, ``sigma_max``, ``sigma_min``,
        ``condition_number``, ``predicted_rmse``, ``invertible``, ``verdict``,
        ``reasons``, ``method`` ...; ``.as_dict()`` is the ``--format json`` output.

    Examples
    --------
    A wrap-around blur is diagonalized by the 2-D DFT: its singular values are the
    magnitudes of the kernel's transfer function on the image's grid.

    >>> import numpy as np
    >>> from deconv_cli import analyze, load_kernel
    >>> a = analyze("gaussian:sigma=1", shape=(32, 32), boundary="wrap", noise_sigma=0.01)
    >>> a.invertible, a.nullity
    (True, 0)
    >>> k = load_kernel("gaussian:sigma=1").array
    >>> h = np.abs(np.fft.fft2(k, s=(32, 32)))
    >>> bool(np.isclose(a.sigma_max, h.max()) and np.isclose(a.sigma_min, h.min()))
    True
    >>> a.verdict
    'invertible but ill-conditioned'
    """
    from deconv_cli.analysis import analyze as run_analysis

    kernel = _kernel(kernel)
    geometry = _geometry(mode, boundary, correlate, stride, dilation, padding)
    dims = tuple(shape) if isinstance(shape, tuple | list) else ()
    if not (
        len(dims) in (2, 3)
        and all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in dims)
        and min(dims) >= 1
    ):
        raise GeometryError(f"shape: `{shape}` is not (H, W) or (H, W, C) with positive integers")
    op = kernel.operator(dims, geometry)
    return run_analysis(op, noise_sigma=noise_sigma, bits=bits)


def compare(
    reference,
    candidate,
    *,
    metrics=None,
    data_range: float | None = None,
    ignore_border: int = 0,
) -> dict[str, float]:
    """Error metrics of ``candidate`` against ``reference``, as ``deconv compare`` measures.

    Values are on the ``[0, 1]`` scale with data range 1: an :class:`Image` read from
    an integer file is already scaled; float data must lie in ``[0, 1]`` unless
    ``data_range`` is given, which divides it (PSNR and SSIM then equal skimage's
    with ``data_range`` on the raw values). Alpha is ignored.

    Parameters
    ----------
    reference, candidate : ndarray or Image
        Of the same shape.
    metrics : sequence of str, optional
        ``mse``, ``rmse``, ``nrmse``, ``psnr``, ``ssim``, ``mae``, ``max_error``
        (default: all).
    data_range : float, optional
        The width of the float data's scale (e.g. 255).
    ignore_border : int
        Pixels cropped from every side of both before measuring.

    Returns
    -------
    dict
        ``{metric: value}``: the numbers of a row of ``compare --format json``
        (PSNR of identical images is ``inf``).

    Examples
    --------
    A constant error of 0.01 is an MSE of 1e-4, a PSNR of 40 dB:

    >>> import numpy as np
    >>> from deconv_cli import compare
    >>> reference = np.random.default_rng(3).uniform(0.2, 0.8, (16, 16))
    >>> m = compare(reference, reference + 0.01, metrics=["psnr", "mae"])
    >>> round(m["psnr"], 6), round(m["mae"], 6)
    (40.0, 0.01)
    """
    from deconv_cli.comparison import crop_border, prepare
    from deconv_cli.metrics import compute_metrics, resolve_metrics

    names = resolve_metrics(list(metrics) if metrics is not None else None)
    if data_range is not None and not (np.isfinite(data_range) and data_range > 0):
        raise InputError(f"data_range: `{data_range}` must be a positive number")
    if isinstance(ignore_border, bool) or not isinstance(ignore_border, int | np.integer):
        raise InputError(f"ignore_border: `{ignore_border}` is not a whole number")
    if ignore_border < 0:
        raise InputError(f"ignore_border: `{ignore_border}` must be 0 or more")
    pair = []
    for name, value in (("reference", reference), ("candidate", candidate)):
        data = prepare(_image(value, name), data_range)
        pair.append(crop_border(data, ignore_border, path=name))
    return compute_metrics(*pair, names)
