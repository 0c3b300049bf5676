"""Convolution weights read from model files: safetensors, ONNX and PyTorch checkpoints.

A kernel spec ``FILE#NAME`` names one tensor (or one ONNX layer) in a model file:

``weights.safetensors#NAME``
    A tensor, read with the ``safetensors`` numpy API (no torch needed).
``model.onnx#NAME``
    An initializer (weights only), or a ``Conv``/``ConvTranspose`` node's name: its
    weights *and* its geometry (``strides``, ``pads``, ``dilations``, ``group``).
``checkpoint.pt#NAME``
    A tensor of a state dict, read only by ``torch.load(weights_only=True)``: a
    pickle that needs anything but tensors and containers is refused, and nothing
    in it runs. Nested dicts are named with dots (``state_dict.conv1.weight``).

A layer's weight is ``(C_out, C_in/g, kh, kw)`` for a ``Conv`` with ``g`` groups. A
``ConvTranspose`` stores ``(C_in, C_out/g, kh, kw)``: it computes ``Aᵀ`` of the
``Conv`` ``A`` with that same array read as ``(C_out', C_in'/g, kh, kw)``, stride,
pads and dilation. deconv's kernel is always that ``A`` (a cross-correlation with
zero padding), so ``deconv transpose`` applies a ``ConvTranspose`` layer and
``deconv convolve`` applies a ``Conv`` layer. A layer's bias is an offset, not part
of the linear operator, and is left out.

Grouped layers: the kernel is the weight as stored with the layer's ``groups``
(:class:`~deconv_cli.operators.ConvOperator` computes the grouped convolution). Its
operator is block diagonal, one ``(C_out/g, C_in/g, kh, kw)`` bank per group
(:func:`group_banks`, for the per-group analysis).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deconv_cli.errors import KernelError
from deconv_cli.kernel_families import did_you_mean
from deconv_cli.kernels import _first_line

MODEL_SUFFIXES = (".safetensors", ".onnx", ".pt", ".pth")
LAYER_KINDS = ("Conv", "ConvTranspose")
INSTALL_HINT = "install it with `pip install 'deconv-cli[models]'`"


@dataclass(frozen=True)
class Layer:
    """One convolution weight of a model file, with its layer geometry when known.

    Attributes
    ----------
    name : str
        The node's name (ONNX layers) or the tensor's name.
    weight : (C_out, C_in/g, kh, kw) ndarray
        As stored (for a ``ConvTranspose``: ``(C_in, C_out/g, kh, kw)``).
    kind : str
        ``"Conv"``, ``"ConvTranspose"`` or ``"tensor"`` (no geometry known).
    stride, dilation : (int, int)
    pads : (top, left, bottom, right)
    groups : int
    output_padding : (int, int)
        ``ConvTranspose`` only: extra rows/columns of its output.
    weight_name : str
        The tensor holding the weight.
    """

    name: str
    weight: np.ndarray
    kind: str = "tensor"
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1
    output_padding: tuple[int, int] = (0, 0)
    weight_name: str = ""

    @property
    def has_geometry(self) -> bool:
        """Whether the file gave the layer's geometry (an ONNX node)."""
        return self.kind in LAYER_KINDS

    @property
    def channels(self) -> tuple[int, int]:
        """``(in, out)`` channels of the layer itself (a transpose swaps them)."""
        a, b = self.weight.shape[:2]
        if self.kind == "ConvTranspose":
            return int(a), int(b) * self.groups
        return int(b) * self.groups, int(a)

    def padding(self) -> tuple[int, int]:
        """``(rows, columns)`` of zero padding on each side; asymmetric pads are refused."""
        top, left, bottom, right = self.pads
        if (top, left) != (bottom, right):
            raise KernelError(
                f"layer `{self.name}`: pads {list(self.pads)} are asymmetric; deconv pads "
                "both sides alike (top = bottom, left = right)"
            )
        return (top, left)

    def geometry(self):
        """The :class:`~deconv_cli.operators.Geometry` of the layer's ``A``."""
        from deconv_cli.operators import Geometry

        return Geometry.create(
            boundary="constant",
            correlate=True,
            stride=self.stride,
            dilation=self.dilation,
            padding=self.padding(),
        )

    def describe(self) -> str:
        """One line: kind, weight shape and geometry."""
        shape = "x".join(map(str, self.weight.shape))
        if not self.has_geometry:
            return f"tensor {shape}"
        parts = [f"{self.kind} {shape}", f"stride {_pair(self.stride)}"]
        parts.append(f"pads {','.join(map(str, self.pads))}")
        if self.dilation != (1, 1):
            parts.append(f"dilation {_pair(self.dilation)}")
        if self.groups > 1:
            parts.append(f"groups {self.groups}")
        return ", ".join(parts)


def _pair(p: tuple[int, int]) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def split_spec(spec: str) -> tuple[Path, str] | None:
    """``(path, name)`` for a model-file spec ``FILE#NAME``, else ``None``.

    A model file without ``#NAME`` is an error naming the fix.
    """
    path_text, sep, name = spec.partition("#")
    path = Path(path_text).expanduser()
    if path.suffix.lower() not in MODEL_SUFFIXES:
        return None
    if not sep or not name:
        raise KernelError(
            f"kernel `{spec}`: name a tensor or layer of the model file, `{path_text}#NAME` "
            f"(see `deconv kernels list {path_text}`)"
        )
    return path, name


def load_model_kernel(spec: str, *, normalize: bool = False):
    """The :class:`~deconv_cli.kernels.Kernel` of a ``FILE#NAME`` spec, else ``None``.

    Its array is the weight as stored, the bank of the layer's conv ``A`` (a
    ``ConvTranspose`` weight ``(C_in, C_out/g, ...)`` is ``A``'s ``(C_out', C_in'/g,
    ...)``), with the layer's ``groups``; its ``layer`` attribute keeps the layer and
    its geometry.
    """
    from dataclasses import replace

    from deconv_cli.kernels import _finish, _validate_array

    parts = split_spec(spec)
    if parts is None:
        return None
    layer = load_layer(*parts)
    where = f"kernel `{spec}`"
    bank = _validate_array(layer.weight, where)
    kernel = _finish(bank, f"layer {spec} ({layer.describe()})", None, normalize, where)
    return replace(kernel, layer=layer, groups=layer.groups)


def load_layer(path: Path, name: str) -> Layer:
    """The layer (ONNX node) or tensor ``name`` of the model file ``path``.

    Raises
    ------
    KernelError
        For a missing file or name, a tensor that is not 4-D, a refused pickle, or a
        missing optional dependency.
    """
    layers = read_layers(path, tensors=True)
    for layer in layers:
        if layer.name == name:
            if layer.weight.ndim != 4:
                raise KernelError(
                    f"`{path}#{name}` has shape {layer.weight.shape}; a conv weight is "
                    "4-D (C_out, C_in, kh, kw)"
                )
            return layer
    names = [layer.name for layer in layers if layer.weight.ndim == 4]
    hint = did_you_mean(name, names)
    shown = ", ".join(f"`{n}`" for n in names[:8]) + (" ..." if len(names) > 8 else "")
    raise KernelError(
        f"`{path}` has no conv weight or layer `{name}`;{hint} it has {shown or 'none'} "
        f"(see `deconv kernels list {path}`)"
    )


def read_layers(path: Path, *, tensors: bool = False) -> list[Layer]:
    """The convolution layers (ONNX) or 4-D tensors of a model file, in file order.

    With ``tensors``, every tensor of the file (ONNX: also every initializer), for
    lookup by name.
    """
    from deconv_cli.fs import note_input

    path = Path(path)
    if not path.is_file():
        raise KernelError(f"model file `{path}` not found")
    note_input(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_layers(path, tensors)
    arrays = _safetensors_arrays(path) if suffix == ".safetensors" else _torch_arrays(path)
    return [
        Layer(name=key, weight=value, weight_name=key)
        for key, value in arrays.items()
        if tensors or value.ndim == 4
    ]


def group_banks(weight: np.ndarray, groups: int) -> list[tuple[slice, slice, np.ndarray]]:
    """Split a grouped ``(C_out, C_in/g, kh, kw)`` weight into its ``g`` banks.

    Returns ``(output channels, input channels, bank)`` per group: group ``j`` maps
    input channels ``j·C_in/g …`` to output channels ``j·C_out/g …``. The layer's
    operator is block diagonal in them, so its singular values are the union of the
    groups': ``σ_max = max_j σ_max(j)``, ``σ_min = min_j σ_min(j)``, ``rank = Σ_j rank(j)``.
    """
    c_out, c_in_g = weight.shape[:2]
    if groups < 1 or c_out % groups:
        raise KernelError(f"group: `{groups}` does not divide the {c_out} output channels")
    per = c_out // groups
    return [
        (
            slice(j * per, (j + 1) * per),
            slice(j * c_in_g, (j + 1) * c_in_g),
            weight[j * per : (j + 1) * per],
        )
        for j in range(groups)
    ]


# -- readers ----------------------------------------------------------------------------


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise KernelError(
            f"reading this model file needs the `{module.split('.')[0]}` package; "
            + (INSTALL_HINT if module != "torch" else "install torch")
        ) from None


def _safetensors_arrays(path: Path) -> dict[str, np.ndarray]:
    _require("safetensors")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            return {key: np.asarray(handle.get_tensor(key)) for key in handle.keys()}
    except Exception as err:  # the library raises several types for a bad file
        raise KernelError(
            f"`{path}` is not a readable safetensors file: {_first_line(err)}"
        ) from None


def _torch_arrays(path: Path) -> dict[str, np.ndarray]:
    torch = _require("torch")
    try:
        loaded = torch.load(str(path), weights_only=True, map_location="cpu")
    except Exception as err:  # UnpicklingError for a pickle that needs code; others for junk
        raise KernelError(
            f"`{path}` refused: torch.load(weights_only=True) cannot read it safely "
            f"({_first_line(err)})"
        ) from None
    arrays: dict[str, np.ndarray] = {}

    def walk(value, prefix: str) -> None:
        if isinstance(value, torch.Tensor):
            arrays[prefix] = value.detach().to(torch.float64).numpy()
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))

    walk(loaded, "")
    return arrays


def _onnx_layers(path: Path, tensors: bool) -> list[Layer]:
    onnx = _require("onnx")
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as err:
        raise KernelError(f"`{path}` is not a readable ONNX model: {_first_line(err)}") from None
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    arrays: dict[str, np.ndarray] = {}

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(constants[name]).astype(np.float64)
        return arrays[name]

    layers = []
    for index, node in enumerate(graph.node):
        if node.op_type not in LAYER_KINDS:
            continue
        name = node.name or f"{node.op_type}_{index}"
        if len(node.input) < 2 or node.input[1] not in constants:
            raise KernelError(
                f"`{path}`: layer `{name}` takes its weights from the graph, not a constant"
            )
        layers.append(_onnx_layer(node, name, array(node.input[1]), path))
    if tensors:
        layers += [Layer(name=n, weight=array(n), weight_name=n) for n in constants]
    return layers


def _onnx_layer(node, name: str, weight: np.ndarray, path: Path) -> Layer:
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if weight.ndim != 4:
        raise KernelError(
            f"`{path}`: layer `{name}` has a {weight.ndim}-D weight; deconv reads 2-D conv layers"
        )
    kh, kw = weight.shape[2:]
    stride = tuple(attrs.get("strides", (1, 1)))
    dilation = tuple(attrs.get("dilations", (1, 1)))
    pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        extent = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
        if stride != (1, 1) or extent[0] % 2 or extent[1] % 2:
            raise KernelError(
                f"`{path}`: layer `{name}` has auto_pad {auto_pad} with stride {stride}: its "
                "pads depend on the input size; deconv reads explicit pads"
            )
        pads = (extent[0] // 2, extent[1] // 2) * 2
    elif auto_pad != "NOTSET":
        raise KernelError(f"`{path}`: layer `{name}` has an unknown auto_pad `{auto_pad}`")
    return Layer(
        name=name,
        weight=weight,
        kind=node.op_type,
        stride=(int(stride[0]), int(stride[1])),
        dilation=(int(dilation[0]), int(dilation[1])),
        pads=tuple(int(p) for p in pads),
        groups=int(attrs.get("group", 1)),
        output_padding=tuple(int(p) for p in attrs.get("output_padding", (0, 0))),
        weight_name=node.input[1],
    )
