"""Microscope point-spread functions: 3-D kernels ``(kz, ky, kx)`` for volumes.

Two models, both sampled at voxel centres about the array's centre voxel and
normalized to sum 1:

gaussian with ``sigma_z``
    The lateral Gaussian of :mod:`deconv_cli.kernels` times an axial Gaussian
    ``exp(-z²/2σ_z²)``, ``z`` in planes; ``2⌈3σ_z⌉+1`` planes.
widefield
    The scalar Born & Wolf PSF of a widefield microscope in the paraxial
    approximation (Born & Wolf, *Principles of Optics*, 7th ed., §8.8;
    Gibson & Lanni 1991 without the layer mismatch):

    .. math::

        h(r, z) = \\left| \\int_0^1 J_0(k\\,\\mathrm{NA}\\,r\\,\\rho)\\,
                  \\exp\\!\\left(-i\\,\\frac{k\\,\\mathrm{NA}^2 z}{2n}\\,\\rho^2\\right)
                  \\rho\\,d\\rho \\right|^2,
        \\qquad k = \\frac{2\\pi}{\\lambda},

    ``r`` the lateral distance from the axis, ``z`` the defocus, ``λ`` the emission
    wavelength, ``n`` the immersion index, all lengths in µm. The integral over the
    pupil radius ``ρ`` is computed by Gauss–Legendre quadrature
    (``scipy.special.roots_legendre``) with enough nodes for the oscillations of
    ``J_0`` and of the defocus phase over ``[0, 1]``. Known facts it reproduces: the
    in-focus plane is the Airy pattern ``(2J_1(v)/v)²``, ``v = k·NA·r``, first dark
    ring at ``0.61 λ/NA``; on the axis ``h ∝ sinc²(u/2)`` with
    ``u = k·NA²·z/(2n)``, first zero at ``z = 2nλ/NA²``; ``h(r, -z) = h(r, z)``.

    Default extent: laterally 4 Airy radii (``2⌈2.44λ/(NA·dxy)⌉+1`` pixels), axially
    3 axial zeros either side (``2⌈6nλ/(NA²·dz)⌉+1`` planes).
"""

from __future__ import annotations

import math

import numpy as np

from deconv_cli.errors import KernelError

MAX_VOXELS = 1 << 24
"""The most voxels a PSF model builds (128 MiB as float64)."""

_WHERE = "kernel `widefield`"


def axial_gaussian(lateral: np.ndarray, sigma_z: float) -> np.ndarray:
    """A 2-D kernel ``lateral`` (summing to 1) times a centred axial Gaussian.

    Parameters
    ----------
    lateral : (ky, kx) ndarray
    sigma_z : float
        The axial standard deviation in planes.

    Returns
    -------
    (2⌈3σ_z⌉+1, ky, kx) ndarray
        ``g(z)·lateral`` with ``g(z) = exp(-z²/2σ_z²)`` normalized to sum 1.
    """
    half = math.ceil(3 * sigma_z - 1e-9)
    _check_voxels("kernel `gaussian`", (2 * half + 1,) + lateral.shape)
    z = np.arange(-half, half + 1, dtype=np.float64)
    with np.errstate(under="ignore"):
        g = np.exp(-0.5 * (z / sigma_z) ** 2)
    return (g / g.sum())[:, None, None] * lateral[None, :, :]


def widefield_extent(*, na: float, wavelength: float, n: float, dxy: float, dz: float):
    """The default ``(planes, side)``: 3 axial zeros and 4 Airy radii either side."""
    side = 2 * math.ceil(4 * 0.61 * wavelength / (na * dxy) - 1e-9) + 1
    planes = 2 * math.ceil(3 * 2 * n * wavelength / (na**2 * dz) - 1e-9) + 1
    return planes, side


def widefield_psf(
    *, na: float, wavelength: float, n: float, dxy: float, dz: float, shape: tuple[int, int, int]
) -> np.ndarray:
    """The scalar paraxial Born & Wolf widefield PSF, sampled at voxel centres.

    Parameters
    ----------
    na : float
        Numerical aperture, ``0 < na < n``.
    wavelength : float
        Emission wavelength in µm.
    n : float
        Refractive index of the immersion medium.
    dxy, dz : float
        Lateral pixel size and plane spacing in µm.
    shape : (planes, height, width)

    Returns
    -------
    (planes, height, width) ndarray
        ``h(r, z)`` (see the module's formula) normalized to sum 1, centred on the
        middle voxel (between voxels along an even axis).

    Raises
    ------
    KernelError
        ``na >= n`` (no propagating wave) or a shape above :data:`MAX_VOXELS`.
    """
    from scipy.special import j0, roots_legendre

    if na >= n:
        raise KernelError(f"{_WHERE}: na=`{na:g}` must be below the immersion index n=`{n:g}`")
    _check_voxels(_WHERE, shape)
    planes, height, width = shape
    k = 2 * math.pi / wavelength
    z = (np.arange(planes) - (planes - 1) / 2) * dz
    y = (np.arange(height) - (height - 1) / 2) * dxy
    x = (np.arange(width) - (width - 1) / 2) * dxy
    r = np.hypot(y[:, None], x[None, :])
    radii, where = np.unique(np.round(r / dxy, 9), return_inverse=True)
    radii = radii * dxy
    a_max = k * na * float(radii[-1])  # J0's argument at rho = 1
    u_max = k * na**2 * float(np.abs(z).max()) / (2 * n)  # the defocus phase at rho = 1
    nodes, weights = roots_legendre(32 + math.ceil(a_max + u_max))
    rho, w = (nodes + 1) / 2, weights / 2  # [-1, 1] -> [0, 1]
    bessel = j0(k * na * radii[:, None] * rho[None, :]) * (rho * w)[None, :]
    phase = np.exp(-1j * (k * na**2 / (2 * n)) * z[:, None] * rho[None, :] ** 2)
    intensity = np.abs(phase @ bessel.T) ** 2  # (planes, radii)
    psf = intensity[:, where.reshape(-1)].reshape(planes, height, width)
    return psf / psf.sum()


def _check_voxels(where: str, shape: tuple[int, ...]) -> None:
    voxels = math.prod(shape)
    if voxels > MAX_VOXELS:
        dims = "x".join(map(str, shape))
        raise KernelError(
            f"{where}: a {dims} kernel has {voxels:,} voxels, above the limit of "
            f"{MAX_VOXELS:,}; give a smaller size or depth, or coarser spacings"
        )


# --------------------------------------------------------------------------- the kernel family

_REQUIRED = ("na", "wavelength", "n", "dxy", "dz")


def build_widefield(v: dict) -> np.ndarray:
    """The ``widefield`` family's kernel from its parameters, as
    :mod:`deconv_cli.kernel_families` parses them."""
    missing = [name for name in _REQUIRED if v[name] is None]
    if missing:
        raise KernelError(
            f"{_WHERE}: missing {', '.join(missing)}; e.g. "
            "`widefield:na=1.4,wavelength=0.52,n=1.515,dxy=0.1,dz=0.2`"
        )
    optics = {name: v[name] for name in _REQUIRED}
    planes, side = widefield_extent(**optics)
    if v["depth"] is not None:
        if v["depth"] < 1:
            raise KernelError(f"{_WHERE}: depth=`{v['depth']}` must be >= 1")
        planes = v["depth"]
    v["size"] = v["size"] or (side, side)
    v["depth"] = planes
    v["_spacing"] = (v["dz"], v["dxy"], v["dxy"])
    return widefield_psf(**optics, shape=(planes, *v["size"]))


def describe_widefield(v: dict) -> str:
    """The canonical spec of a built ``widefield`` kernel."""
    size = v["size"]
    side = str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"
    optics = ",".join(f"{name}={v[name]:g}" for name in _REQUIRED)
    return f"widefield:{optics},size={side},depth={v['depth']}"
