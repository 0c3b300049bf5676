"""Every convolution layer of an ONNX model: is it invertible, and how well?

:func:`analyze_model` walks the ``Conv`` and ``ConvTranspose`` nodes in graph order,
with the input shape each one sees (``onnx.shape_inference`` from the given network
input), and describes each layer's linear operator (the bias, an offset, is left
out). A layer with ``g`` groups is block diagonal in its groups
(:func:`deconv_cli.models.group_banks`): its singular values are the union of the
groups', ``rank = Σ rank_j``. A ``ConvTranspose`` computes ``Aᵀ`` of a ``Conv``
``A`` (:mod:`deconv_cli.models`): same singular values, its input is ``A``'s output.

How each group's singular values are found, in this order:

1. **Dense SVD, exact** (:func:`deconv_cli.analysis.analyze`) when the group has at
   most :data:`deconv_cli.analysis.DENSE_LIMIT` unknowns.
2. **1×1 kernel, no padding, exact**: ``A = S (I ⊗ W)`` keeps ``⌈H/s⌉·⌈W/s⌉``
   pixels, each mapped by the ``C_out × C_in`` matrix ``W``: the singular values of
   ``W``, each once per kept pixel, and the dropped pixels are null.
3. **Circulant bounds** otherwise. Zero padding ``p`` makes ``A = Q C E``: ``E``
   embeds the image in the padded ``(H+2p) × (W+2p)`` grid (an isometry), ``C`` is
   the circular stride-1 correlation on that grid, ``Q`` keeps the valid, strided
   outputs (a coordinate selection). So ``σ_max(A) <= σ_max(C)``, an exact upper
   bound, where ``C``'s singular values are those of the kernel's per-frequency
   ``C_out × C_in`` Fourier matrices (Sedghi, Gupta & Long, ICLR 2019). ``σ_min`` of
   ``C`` is reported as an estimate (no bound); the rank is proven only where the
   layer has fewer outputs than inputs (then it is not invertible).

"Invertible" is injective, as in :mod:`deconv_cli.analysis`: nullity 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deconv_cli.errors import DeconvError
from deconv_cli.models import Layer, _pair, group_banks

_CHUNK_ELEMENTS = 1 << 22  # complex entries of per-frequency matrices held at once


@dataclass
class LayerAnalysis:
    """One layer's row: geometry, shapes, rank and singular values, verdict.

    ``invertible`` is ``None`` where the rank is not proven; ``exact`` says which of
    ``rank``, ``sigma_max``, ``sigma_min`` are exact (an inexact ``sigma_max`` is an
    upper bound, an inexact ``sigma_min`` an estimate).
    """

    layer: str
    kind: str
    channels_in: int
    channels_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    rank: int | None
    nullity: int | None
    sigma_max: float
    sigma_min: float | None
    condition_number: float | None
    invertible: bool | None
    verdict: str
    method: str
    exact: dict[str, bool] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        from dataclasses import asdict

        from deconv_cli.analysis import jsonable

        return jsonable(asdict(self))


@dataclass
class ModelAnalysis:
    """All layers, the product of their ``σ_max`` and the layers that lose information."""

    layers: list[LayerAnalysis]

    @property
    def lipschitz_bound(self) -> float:
        """``Π σ_max``: a bound on the Lipschitz constant of the conv layers' chain
        (the activations in between are assumed 1-Lipschitz)."""
        return float(math.prod(row.sigma_max for row in self.layers))

    @property
    def lossy(self) -> list[str]:
        """Layers proven not invertible."""
        return [row.layer for row in self.layers if row.invertible is False]

    def as_dict(self) -> dict[str, Any]:
        """``{"layers": [...], "lipschitz_bound": ..., "lossy_layers": [...]}``."""
        return {
            "layers": [row.as_dict() for row in self.layers],
            "lipschitz_bound": self.lipschitz_bound,
            "lossy_layers": self.lossy,
        }


def analyze_model(
    path: str | Path,
    shape: tuple[int, int, int],
    *,
    on_layer: Callable[[str], None] | None = None,
) -> ModelAnalysis:
    """Analyze every ``Conv``/``ConvTranspose`` layer of an ONNX model.

    Parameters
    ----------
    path : path
        An ``.onnx`` file.
    shape : (H, W, C)
        The network input, channels last (the batch is 1).
    on_layer : callable, optional
        Called as ``on_layer(name)`` as each layer starts.

    Returns
    -------
    ModelAnalysis
    """
    return analyze_plan(layer_plan(path, shape), on_layer=on_layer)


def analyze_plan(
    plan: list[tuple[Layer, tuple]], *, on_layer: Callable[[str], None] | None = None
) -> ModelAnalysis:
    """:func:`analyze_model` of a :func:`layer_plan` (whose length sizes a progress bar)."""
    rows = []
    for layer, shapes in plan:
        if on_layer is not None:
            on_layer(layer.name)
        rows.append(analyze_layer(layer, shapes))
    return ModelAnalysis(rows)


def layer_plan(path: str | Path, shape: tuple[int, int, int]) -> list[tuple[Layer, tuple]]:
    """The model's conv layers in graph order, each with its ``((H, W, C) in, out)``."""
    from deconv_cli.models import read_layers

    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise DeconvError(f"MODEL: `{path}` is not an .onnx file")
    layers = read_layers(path)
    shapes = _inferred_shapes(path, shape)
    return [(layer, shapes[layer.name]) for layer in layers]


def _inferred_shapes(path: Path, shape: tuple[int, int, int]) -> dict[str, tuple]:
    """``{layer name: ((H, W, C) in, (H, W, C) out)}`` by ONNX shape inference."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(inputs) != 1:
        raise DeconvError(f"MODEL: `{path}` has {len(inputs)} inputs; deconv reads one")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise DeconvError(f"MODEL: `{path}`'s input is {len(dims)}-D; expected N×C×H×W")
    h, w, c = shape
    for dim, value in zip(dims, (1, c, h, w), strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as err:  # onnx raises InferenceError and others
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DeconvError(
            f"`{h}x{w}x{c}` does not fit `{path}`: {message}", parameter="shape"
        ) from None
    known = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        d = value.type.tensor_type.shape.dim
        if len(d) == 4 and all(x.HasField("dim_value") for x in d):
            known[value.name] = (d[2].dim_value, d[3].dim_value, d[1].dim_value)
    shapes = {}
    for index, node in enumerate(graph.node):
        if node.op_type in ("Conv", "ConvTranspose"):
            name = node.name or f"{node.op_type}_{index}"
            if node.input[0] not in known or node.output[0] not in known:
                raise DeconvError(f"MODEL: shape inference gave no shape for layer `{name}`")
            shapes[name] = (known[node.input[0]], known[node.output[0]])
    return shapes


@dataclass
class _Part:
    """One group's operator ``A_j``: rank, extreme singular values, how found."""

    n: int
    m: int
    rank: int | None  # None: not proven
    sigma_max: float
    sigma_min: float | None
    exact_max: bool
    exact_min: bool
    method: str


def analyze_layer(layer: Layer, shapes: tuple) -> LayerAnalysis:
    """One layer's analysis, given its ``((H, W, C) in, (H, W, C) out)``.

    LAPACK runs on :data:`deconv_cli.operators.threads.SVD_THREADS` threads, as for
    ``analyze KERNEL`` (the measurements that chose it are there).
    """
    from deconv_cli.operators import ConvOperator
    from deconv_cli.operators.threads import blas_threads

    layer_in, layer_out = shapes
    transpose = layer.kind == "ConvTranspose"
    # A's input is the layer's input for a Conv, its output for a ConvTranspose.
    a_in = layer_out if transpose else layer_in
    geometry = layer.geometry()
    parts = []
    with blas_threads():
        for _, ins, bank in group_banks(layer.weight, layer.groups):
            channels = ins.stop - ins.start
            op = ConvOperator(bank, (*a_in[:2], channels), geometry)
            parts.append(_analyze_group(op))
    n_a, m_a = sum(p.n for p in parts), sum(p.m for p in parts)
    ranks = [p.rank for p in parts]
    rank = None if None in ranks else sum(ranks)
    sigma_max = max(p.sigma_max for p in parts)
    mins = [p.sigma_min for p in parts if p.sigma_min is not None]
    sigma_min = min(mins) if mins else None
    exact_min = all(p.exact_min for p in parts)
    n, m = (m_a, n_a) if transpose else (n_a, m_a)
    nullity = None if rank is None else n - rank
    invertible = (nullity == 0) if nullity is not None else (False if m < n else None)
    kh, kw = layer.weight.shape[2:]
    cin, cout = layer.channels
    return LayerAnalysis(
        layer=layer.name,
        kind=layer.kind,
        channels_in=cin,
        channels_out=cout,
        kernel=(int(kh), int(kw)),
        stride=layer.stride,
        padding=layer.pads,
        dilation=layer.dilation,
        groups=layer.groups,
        input_shape=tuple(layer_in),
        output_shape=tuple(layer_out),
        rank=rank,
        nullity=nullity,
        sigma_max=sigma_max,
        sigma_min=sigma_min,
        condition_number=(sigma_max / sigma_min) if sigma_min else None,
        invertible=invertible,
        verdict=_verdict(layer, n, m, nullity, invertible),
        method=parts[0].method
        + (f" (per group, {layer.groups} groups)" if layer.groups > 1 else ""),
        exact={
            "rank": rank is not None,
            "sigma_max": all(p.exact_max for p in parts),
            "sigma_min": exact_min and sigma_min is not None,
        },
    )


def _verdict(layer: Layer, n: int, m: int, nullity, invertible) -> str:
    if invertible:
        return "invertible"
    if invertible is None:
        return "not proven: rank unknown at this size (σ_min is an estimate)"
    cin, cout = layer.channels
    if m < n:
        step = math.prod(layer.stride)
        if layer.kind == "Conv" and step > 1 and cout < cin * step:
            why = f"stride {_pair(layer.stride)} with {cout} channels out < {cin}·{step}"
        elif cout < cin:
            why = f"channel count {cin}→{cout}"
        else:
            why = "output smaller than input"
        return f"not invertible: {why}: {m} outputs for {n} inputs"
    return f"not invertible: spectral zeros (nullity {nullity})"


def _analyze_group(op) -> _Part:
    from deconv_cli.analysis import DENSE_LIMIT, analyze

    m, n = op.shape
    if n <= DENSE_LIMIT:
        result = analyze(op)
        return _Part(
            n, m, result.rank, result.sigma_max, result.sigma_min, True, True, "exact: dense SVD"
        )
    eff = op.effective
    if eff.shape[2:] == (1, 1) and op.pads == ((0, 0), (0, 0)):
        return _one_by_one(op)
    return _circulant_bounds(op)


def _one_by_one(op) -> _Part:
    m, n = op.shape
    kept = math.prod(op.output_shape[:2])
    values = np.linalg.svd(op.effective[:, :, 0, 0], compute_uv=False)
    tol = max(m, n) * np.finfo(np.float64).eps * values[0]
    nonzero = values[values > tol]
    return _Part(
        n,
        m,
        kept * int(nonzero.size),
        float(values[0]),
        float(nonzero[-1]) if nonzero.size else None,
        True,
        True,
        "exact: 1×1 kernel, SVD of the channel matrix",
    )


def _circulant_bounds(op) -> _Part:
    """``σ_max`` bound and ``σ_min`` estimate from the circular stand-in (module doc).

    The per-frequency singular values are computed in single precision (complex64,
    the stacked ``np.linalg.svd``), and the frequencies that may hold the extremes
    are recomputed in double precision: LAPACK's singular values of ``K_f`` are off
    by at most about ``max(m, n)·ε₃₂·‖K_f‖``, so every frequency whose single
    precision ``σ_max`` (``σ_min``) lies within that of the extreme is a candidate.
    Both extremes are thus double precision results. A real kernel's spectrum has
    ``K(-f) = conj(K(f))`` (same singular values), so the ``rfft2`` half suffices.
    """
    import scipy.fft

    eff = op.effective  # (C_out, C_in, KH, KW), dilated
    c_out, c_in = eff.shape[:2]
    spectrum = scipy.fft.rfft2(eff.astype(np.float32), s=op.padded_shape, axes=(2, 3), workers=1)
    flat = spectrum.reshape(c_out, c_in, -1).transpose(2, 0, 1)  # (freq, C_out, C_in)
    step = max(1, _CHUNK_ELEMENTS // (c_out * c_in))
    values = np.concatenate(
        [
            np.linalg.svd(flat[start : start + step], compute_uv=False)
            for start in range(0, flat.shape[0], step)
        ]
    )
    slack = 4 * max(c_out, c_in) * np.finfo(np.float32).eps * values[:, 0]
    top = values[:, 0] >= values[:, 0].max() - slack
    bottom = values[:, -1] <= values[:, -1].min() + slack
    hi = _double_svd(eff, op.padded_shape, np.flatnonzero(top))[:, 0].max()
    lo = _double_svd(eff, op.padded_shape, np.flatnonzero(bottom))[:, -1].min()
    m, n = op.shape
    return _Part(
        n,
        m,
        None,
        float(hi),
        float(lo) if lo > 0 else None,
        False,
        False,
        "bounds: σ_max <= the circular layer's on the padded grid; σ_min its estimate",
    )


def _double_svd(eff: np.ndarray, grid: tuple[int, int], chosen: np.ndarray) -> np.ndarray:
    """Singular values, in double precision, of ``K_f`` at the chosen ``rfft2`` indices.

    ``K_f = Σ_{a,b} k[:, :, a, b] · exp(-2πi (u a / P + v b / Q))`` for ``f = (u, v)``
    on the ``P × Q`` grid, summed directly from the float64 kernel.
    """
    u, v = np.divmod(chosen, grid[1] // 2 + 1)
    ea = np.exp(-2j * np.pi * np.outer(u, np.arange(eff.shape[2])) / grid[0])
    eb = np.exp(-2j * np.pi * np.outer(v, np.arange(eff.shape[3])) / grid[1])
    matrices = np.einsum("oiab,fa,fb->foi", eff, ea, eb, optimize=True)
    return np.linalg.svd(matrices, compute_uv=False)
