"""Kernels from model files and `analyze MODEL.onnx`, checked against torch itself.

Oracles: torch's conv2d / conv_transpose2d, a power iteration on the torch layer,
the rank of the layer's dense Jacobian (torch autograd).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from deconv_cli.cli import main

SHAPE = (8, 8, 3)  # the network input, channels last (small: dense oracles stay fast)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def net():
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    torch.set_num_threads(1)  # tiny layers: threads only cost (the suite runs 2 workers)
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 8, 1),
        torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
    )


@pytest.fixture(scope="module")
def onnx_path(net, tmp_path_factory):
    import warnings

    import torch

    path = tmp_path_factory.mktemp("model") / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(net, torch.zeros(1, 3, *SHAPE[:2]), str(path), dynamo=False)
    return path


@pytest.fixture(scope="module")
def analysis(onnx_path):
    from deconv_cli.models_analysis import analyze_model

    return analyze_model(onnx_path, SHAPE)


def _conv_layers(net):
    import torch

    return [m for m in net if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]


def _layer_map(module, x):
    """The layer without its bias, float64: the linear operator deconv analyses."""
    import torch
    import torch.nn.functional as F

    w = module.weight.detach().double()
    kw = dict(
        stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups
    )
    if isinstance(module, torch.nn.ConvTranspose2d):
        return F.conv_transpose2d(x, w, None, output_padding=module.output_padding, **kw)
    return F.conv2d(x, w, None, **kw)


def _layer_inputs(net):
    """Each conv layer's input shape (N, C, H, W), by running the network."""
    import torch

    shapes, x = [], torch.zeros(1, SHAPE[2], *SHAPE[:2])
    for module in net:
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            shapes.append(tuple(x.shape))
        x = module(x)
    return shapes


def _power_sigma_max(module, shape, iterations=300):
    import torch

    g = torch.Generator().manual_seed(1)
    v = torch.randn(shape, generator=g, dtype=torch.float64)
    sigma = 0.0
    for _ in range(iterations):
        v = v / v.norm()
        v.requires_grad_(True)
        y = _layer_map(module, v)
        sigma = float(y.detach().norm())
        (v,) = torch.autograd.grad(0.5 * (y * y).sum(), v)  # AᵀA v
    return sigma


def test_sigma_max_matches_a_power_iteration_on_the_torch_layer(net, analysis):
    result = analysis
    layers, shapes = _conv_layers(net), _layer_inputs(net)
    assert [row.kind for row in result.layers] == [
        "Conv",
        "Conv",
        "Conv",
        "Conv",
        "ConvTranspose",
    ]
    for row, module, shape in zip(result.layers, layers, shapes, strict=True):
        reference = _power_sigma_max(module, shape)
        assert row.sigma_max == pytest.approx(reference, rel=1e-3), row.layer
        assert row.input_shape == (shape[2], shape[3], shape[1])


def test_the_verdict_is_the_dense_jacobians_rank(net, analysis):
    import torch

    for row, module, shape in zip(
        analysis.layers, _conv_layers(net), _layer_inputs(net), strict=True
    ):
        x = torch.zeros(shape, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(
            lambda v, m=module: _layer_map(m, v), x, vectorize=True
        )
        matrix = jac.reshape(-1, int(np.prod(shape))).numpy()
        rank = np.linalg.matrix_rank(matrix)
        assert row.invertible == (rank == matrix.shape[1]), row.layer
        assert row.rank == rank, row.layer


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4], ids=["conv", "stride", "depthwise", "1x1", "T"])
def test_a_model_layer_kernel_equals_torch(net, onnx_path, tmp_path, index):
    import torch

    module, shape = _conv_layers(net)[index], _layer_inputs(net)[index]
    transposed = isinstance(module, torch.nn.ConvTranspose2d)
    name = f"/{2 * index}/{'ConvTranspose' if transposed else 'Conv'}"
    rng = np.random.default_rng(index)
    x = rng.standard_normal(shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x[0].transpose(1, 2, 0))  # channels last
    command = "transpose" if transposed else "convolve"
    result = run(command, tmp_path / "x.npy", "-k", f"{onnx_path}#{name}", "-o", tmp_path / "y.npy")
    assert result.exit_code == 0, result.output
    expected = _layer_map(module, torch.from_numpy(x).double()).numpy()[0].transpose(1, 2, 0)
    got = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_a_flag_that_contradicts_the_layer_is_a_usage_error(onnx_path, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((8, 8, 8)))
    result = run(
        "convolve", tmp_path / "x.npy", "-k", f"{onnx_path}#/2/Conv", "--stride", "1", "-o",
        tmp_path / "y.npy",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--stride 1" in result.output and "--stride 2" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "y.npy").exists()


def test_analyze_model_json_and_list(onnx_path):
    result = run("analyze", onnx_path, "--shape", "8x8x3", "-f", "json", "-q")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [row["layer"] for row in data["layers"]][-1] == "/8/ConvTranspose"
    assert data["lossy_layers"] == ["/2/Conv", "/6/Conv"]  # stride 2 8→16, channels 16→8
    product = np.prod([row["sigma_max"] for row in data["layers"]])
    assert data["lipschitz_bound"] == pytest.approx(product)
    listed = json.loads(run("kernels", "list", onnx_path, "-f", "json").output)
    depthwise = listed[2]
    assert (depthwise["shape"], depthwise["groups"], depthwise["stride"]) == (
        [16, 1, 3, 3],
        16,
        [1, 1],
    )


def test_safetensors_tensor_is_the_same_kernel_as_its_npy(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    save_file(
        {"conv.weight": weight, "conv.bias": np.zeros(4, np.float32)}, tmp_path / "w.safetensors"
    )
    np.save(tmp_path / "w.npy", weight)
    np.save(tmp_path / "x.npy", rng.standard_normal((12, 12, 3)))
    for spec, out in (
        (f"{tmp_path / 'w.safetensors'}#conv.weight", "a"),
        (tmp_path / "w.npy", "b"),
    ):
        result = run(
            "convolve", tmp_path / "x.npy", "-k", spec, "--correlate", "-o", tmp_path / f"{out}.npy"
        )
        assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    listed = json.loads(run("kernels", "list", tmp_path / "w.safetensors", "-f", "json").output)
    assert [(r["name"], r["shape"]) for r in listed] == [("conv.weight", [4, 3, 3, 3])]
    bias = run("kernels", "show", f"{tmp_path / 'w.safetensors'}#conv.bias")
    assert bias.exit_code == 2 and "4-D" in bias.output


class _Payload:
    """Unpickling this creates the file ``path``: code a safe loader must never run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    torch.save(
        {"conv.weight": torch.zeros(2, 2, 3, 3), "evil": _Payload(marker)}, tmp_path / "e.pt"
    )
    np.save(tmp_path / "x.npy", np.zeros((8, 8, 2)))
    result = run(
        "convolve",
        tmp_path / "x.npy",
        "-k",
        f"{tmp_path / 'e.pt'}#conv.weight",
        "-o",
        tmp_path / "y.npy",
    )
    assert result.exit_code == 2
    assert "refused" in result.output
    assert not marker.exists()
    assert not (tmp_path / "y.npy").exists()
    safe = torch.ones(2, 2, 3, 3, dtype=torch.float64)
    torch.save({"model": {"conv.weight": safe}}, tmp_path / "ok.pt")
    listed = json.loads(run("kernels", "list", tmp_path / "ok.pt", "-f", "json").output)
    assert [r["name"] for r in listed] == ["model.conv.weight"]


def test_a_missing_package_is_one_clear_line(tmp_path, monkeypatch):
    import sys

    (tmp_path / "m.onnx").write_bytes(b"not a model")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    result = run("kernels", "list", tmp_path / "m.onnx")
    assert result.exit_code == 2
    assert "deconv-cli[models]" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_group_banks_split_the_weight_by_group():
    from deconv_cli.models import group_banks

    weight = np.arange(4 * 2 * 1 * 1, dtype=float).reshape(4, 2, 1, 1) + 1
    split = group_banks(weight, 2)
    assert [(o.start, o.stop, i.start, i.stop) for o, i, _ in split] == [(0, 2, 0, 2), (2, 4, 2, 4)]
    np.testing.assert_array_equal(split[1][2], weight[2:])


@pytest.fixture(scope="module")
def grouped_path(tmp_path_factory):
    """One grouped, strided layer (Conv 4→6, groups 2, stride 2) as an ONNX file."""
    import warnings

    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    torch.manual_seed(1)
    layer = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False)
    path = tmp_path_factory.mktemp("grouped") / "grouped.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(layer, torch.zeros(1, 4, 9, 7), str(path), dynamo=False)
    return layer, path


def test_a_grouped_layer_through_the_cli_is_torchs_grouped_conv(grouped_path, tmp_path):
    """`convolve -k FILE#LAYER` is conv2d(groups=2) and `transpose` its conv_transpose2d,
    on the weight as stored (the kernel keeps the layer's groups)."""
    import torch
    import torch.nn.functional as F

    from deconv_cli.kernels import load_kernel

    layer, path = grouped_path
    spec = f"{path}#/Conv"
    kernel = load_kernel(spec)
    assert (kernel.groups, kernel.array.shape) == (2, (6, 2, 3, 3))
    w = layer.weight.detach().double()
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 7, 4))
    np.save(tmp_path / "x.npy", x)
    result = run("convolve", tmp_path / "x.npy", "-k", spec, "-o", tmp_path / "y.npy")
    assert result.exit_code == 0, result.output
    expected = F.conv2d(
        torch.from_numpy(x.transpose(2, 0, 1))[None], w, stride=2, padding=1, groups=2
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), expected.numpy()[0].transpose(1, 2, 0), atol=1e-10
    )
    y = rng.standard_normal((5, 4, 6))
    np.save(tmp_path / "d.npy", y)
    result = run(
        "transpose",
        tmp_path / "d.npy",
        "-k",
        spec,
        "--output-shape",
        "9x7",
        "-o",
        tmp_path / "b.npy",
    )
    assert result.exit_code == 0, result.output
    back = F.conv_transpose2d(
        torch.from_numpy(y.transpose(2, 0, 1))[None], w, stride=2, padding=1, groups=2
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "b.npy"), back.numpy()[0].transpose(1, 2, 0), atol=1e-10
    )


def test_kernels_show_of_a_grouped_layer_names_each_slices_input_channel(grouped_path, tmp_path):
    """Output 3 is in group 1 (outputs 3-5), which reads inputs 2 and 3; a .npy holds
    no groups, so saving one is refused."""
    layer, path = grouped_path
    result = run("kernels", "show", f"{path}#/Conv")
    assert result.exit_code == 0, result.output
    labels = [line.split("]")[0] for line in result.output.splitlines() if line.startswith("[out")]
    assert labels == [f"[out {o}, in {o // 3 * 2 + i}" for o in range(6) for i in range(2)]
    result = run("kernels", "show", f"{path}#/Conv", "--save", tmp_path / "k.npy")
    assert result.exit_code == 2
    assert "holds no groups" in result.output and not (tmp_path / "k.npy").exists()


def test_analyze_of_a_grouped_layer_is_its_torch_jacobians(grouped_path):
    """`deconv_cli.analyze` on the grouped kernel: rank and extreme singular values of
    the layer's dense Jacobian (torch autograd), 9x7x4 unknowns."""
    import torch
    import torch.nn.functional as F

    from deconv_cli import analyze

    layer, path = grouped_path
    w = layer.weight.detach().double()
    jac = torch.autograd.functional.jacobian(
        lambda v: F.conv2d(v, w, stride=2, padding=1, groups=2), torch.zeros(1, 4, 9, 7).double()
    )
    values = np.linalg.svd(jac.reshape(-1, 4 * 9 * 7).numpy(), compute_uv=False)
    result = analyze(
        kernel=f"{path}#/Conv",
        shape=(9, 7, 4),
        stride=2,
        padding=1,
        correlate=True,
        boundary="constant",
    )
    assert result.rank == np.linalg.matrix_rank(jac.reshape(-1, 4 * 9 * 7).numpy())
    assert result.sigma_max == pytest.approx(values[0], rel=1e-9)
    assert result.sigma_min == pytest.approx(values[result.rank - 1], rel=1e-6)


def test_a_grouped_layers_memory_estimate_is_its_grouped_operators(grouped_path):
    """The estimate is made on the grouped operator (4 input channels from the 6x2x3x3
    weight as stored, never a dense 6x4 bank): FIXED_BYTES + COPIES image-sized arrays,
    the image's 64x48 pixels times the larger channel count (6 out)."""
    from deconv_cli.errors import GeometryError
    from deconv_cli.kernels import load_kernel
    from deconv_cli.memory import COPIES, FIXED_BYTES, estimate_bytes

    _, path = grouped_path
    kernel = load_kernel(f"{path}#/Conv")
    geometry = kernel.layer.geometry()
    need = estimate_bytes("convolve", (64, 48, 4), kernel.array, geometry, groups=kernel.groups)
    assert need == FIXED_BYTES + int(COPIES["convolve"] * 64 * 48 * 6 * 8)
    with pytest.raises(GeometryError, match="takes 2 input channels but the image has 4"):
        estimate_bytes("convolve", (64, 48, 4), kernel.array, geometry)


def test_invert_with_a_model_layer_restores_the_layers_input(net, onnx_path, tmp_path):
    """Conv 3→8 with padding 1 is injective: `invert` recovers the activation torch fed it."""
    import torch

    module, shape = _conv_layers(net)[0], _layer_inputs(net)[0]
    x = np.random.default_rng(5).standard_normal(shape)
    y = _layer_map(module, torch.from_numpy(x)).numpy()[0].transpose(1, 2, 0)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "x.npy"
    result = run(
        "invert", tmp_path / "y.npy", "-k", f"{onnx_path}#/0/Conv", "-m", "lsqr", "-o", out
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(out), x[0].transpose(1, 2, 0), atol=1e-6)


def test_transpose_with_a_strided_model_layer_is_torchs_adjoint(net, onnx_path, tmp_path):
    """The adjoint of Conv 8→16 stride 2 is conv_transpose2d with the same weights."""
    import torch

    module, shape = _conv_layers(net)[1], _layer_inputs(net)[1]
    y = np.random.default_rng(6).standard_normal((1, 16, shape[2] // 2, shape[3] // 2))
    np.save(tmp_path / "y.npy", y[0].transpose(1, 2, 0))
    out = tmp_path / "x.npy"
    result = run(
        "transpose", tmp_path / "y.npy", "-k", f"{onnx_path}#/2/Conv",
        "--output-shape", f"{shape[2]}x{shape[3]}", "-o", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    weight = module.weight.detach().double()
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(y), weight, stride=2, padding=1, output_padding=1
    )
    np.testing.assert_allclose(np.load(out), expected.numpy()[0].transpose(1, 2, 0), atol=1e-6)


@pytest.mark.parametrize(
    ("c_in", "c_out", "groups"), [(4, 6, 2), (3, 3, 3)], ids=["grouped", "depthwise"]
)
def test_a_grouped_bank_is_torchs_grouped_conv_and_its_adjoint(c_in, c_out, groups):
    """`ConvOperator(groups=)` on the (C_out, C_in/g, kh, kw) weight as stored: A is
    conv2d(groups=g), Aᵀ is conv_transpose2d(groups=g), with stride, dilation, padding."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from deconv_cli.operators import ConvOperator, Geometry

    rng = np.random.default_rng(groups)
    weight = rng.standard_normal((c_out, c_in // groups, 3, 3))
    geometry = Geometry.create(
        boundary="constant", correlate=True, stride=(2, 1), dilation=(1, 2), padding=(1, 2)
    )
    op = ConvOperator(weight, (11, 9, c_in), geometry, groups=groups)
    x = rng.standard_normal((11, 9, c_in))
    w, kw = torch.from_numpy(weight), dict(stride=(2, 1), dilation=(1, 2), padding=(1, 2))
    expected = F.conv2d(torch.from_numpy(x.transpose(2, 0, 1))[None], w, groups=groups, **kw)
    np.testing.assert_allclose(op.forward(x), expected[0].numpy().transpose(1, 2, 0), atol=1e-12)
    y = rng.standard_normal(op.output_shape)
    # rows: (6 - 1)·2 − 2·1 + 2 + 1 = 11, the input's: no output_padding
    back = F.conv_transpose2d(torch.from_numpy(y.transpose(2, 0, 1))[None], w, groups=groups, **kw)
    np.testing.assert_allclose(op.adjoint(y), back[0].numpy().transpose(1, 2, 0), atol=1e-12)
