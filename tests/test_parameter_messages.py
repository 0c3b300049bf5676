"""Library errors name parameters (`tile`, `method=inverse`); the command line says
them as flags (``--tile``, ``--method inverse``): one sample per module (issue #15)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from deconv_cli.cli import main, shown
from deconv_cli.errors import DeconvError
from deconv_cli.operators import Geometry

FLAG = re.compile(r"--[a-z]")


def _memory(tmp_path):
    from deconv_cli.memory import check_memory

    strided = Geometry.create(stride=2)
    check_memory("invert", (4096, 4096), np.ones((3, 3)), strided, method="cgls", available=10**6)


def _zarr_dtype(tmp_path):
    from deconv_cli.zarrio import process_zarr

    process_zarr(
        tmp_path / "in.zarr", tmp_path / "out.zarr", np.ones((3, 3)), Geometry(), dtype="int8"
    )


def _kernel_size(tmp_path):
    from deconv_cli.blind_run import parse_kernel_size

    parse_kernel_size("2")


def _kernel_out(tmp_path):
    from deconv_cli.blind_run import check_kernel_out

    check_kernel_out(str(tmp_path / "k.txt"), several=False, overwrite=False)


def _bound(tmp_path):
    from deconv_cli.blind import check_bound

    check_bound((41, 41), (40, 40))


def _family(tmp_path):
    from deconv_cli.blind_fit import fit_family

    fit_family("spiral", np.zeros((32, 32)), (9, 9))


def _inverse(tmp_path):
    from deconv_cli import api

    api.invert(np.ones((12, 12)), "box:size=3", method="inverse", mode="valid")


def _axes_for_stack(tmp_path):
    from deconv_cli.formats import check_image_shape

    check_image_shape(tmp_path / "s.npy", (5, 8, 8), 10**6, 4)


def _bead_size(tmp_path):
    from deconv_cli.beads import parse_size

    parse_size("15x11")


def _tiled_geometry(tmp_path):
    from deconv_cli.tiled_invert import check_tiled_geometry

    check_tiled_geometry(Geometry.create(mode="full"))


def _volume_kernel(tmp_path):
    from deconv_cli.kernels import Kernel
    from deconv_cli.process import kernel_layout

    kernel_layout(Kernel(np.ones((3, 3, 3)) / 27, "cube"), "YX", "the image")


def _noise_and_bits(tmp_path):
    from deconv_cli.analysis import noise_level

    noise_level(0.1, 8)


def _voxels(tmp_path):
    from deconv_cli import config
    from deconv_cli.volumes import check_voxels

    with config.use(config.Config(max_pixels=100)):
        check_voxels(tmp_path / "v.npy", "ZYX", (5, 8, 8))


def _compare_volume_with_image(tmp_path):
    from deconv_cli.comparison import compare_images

    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(
        tmp_path / "vol.tif", np.zeros((4, 8, 8), np.float32), photometric="minisblack"
    )
    np.save(tmp_path / "img.npy", np.zeros((8, 8)))
    compare_images(tmp_path / "vol.tif", [tmp_path / "img.npy"])


CASES = {
    "memory": (_memory, ["`method=cgls`", "`tile`", "`mode=same`", "`padding`"],
               ["--method cgls", "--tile works for invert only with --mode same, stride 1 and "
                "no --padding"]),
    "zarrio": (_zarr_dtype, ["dtype: `int8`"], ["--dtype: `int8`"]),
    "blind_run": (_kernel_size, ["kernel_size: `2`"], ["--kernel-size: `2`"]),
    "blind_run-out": (_kernel_out, ["kernel_out: `"], ["--kernel-out: `"]),
    "blind": (_bound, ["`kernel_size=41x41` is too large"], ["--kernel-size 41x41 is too large"]),
    "blind_fit": (_family, ["family: `spiral`"], ["--family: `spiral`"]),
    "restore.inverse": (_inverse, ["`method=inverse`: A is not injective", "`method=pinv`"],
                        ["--method inverse: A is not injective", "use --method pinv"]),
    "formats": (_axes_for_stack, ["give `axes` "], ["give --axes "]),
    "beads": (_bead_size, ["size: `15x11`"], ["--size: `15x11`"]),
    "tiled_invert": (_tiled_geometry, ["tile: a tiled invert needs `mode=same`", "without `tile`"],
                     ["--tile: a tiled invert needs --mode same, stride 1 and no --padding",
                      "without --tile"]),
    "process": (_volume_kernel, ["with `axes=ZYX`"], ["with --axes ZYX"]),
    "analysis": (_noise_and_bits, ["(`noise_sigma`)", "(`bits`)"], ["(--noise-sigma)", "(--bits)"]),
    "comparison": (_compare_volume_with_image, ["needs `axes`"], ["needs --axes"]),
    "volumes": (_voxels, ["set `max_pixels=320`"], ["set --max-pixels 320"]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_the_library_names_the_parameter_and_the_cli_the_flag(tmp_path, name):
    call, library, cli = CASES[name]
    with pytest.raises(DeconvError) as caught:
        call(tmp_path)
    text = str(caught.value)
    assert not FLAG.search(text), text
    for words in library:
        assert words in text
    said = shown(caught.value)
    for words in cli:
        assert words in said, said


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize(
    "args,words",
    [
        (["compare", "{tif}", "{img}"], "(a .npy volume needs --axes)"),
        (["kernels", "from-beads", "{npy}", "--size", "15x11", "-o", "{out}.npy"],
         "--size: `15x11` must be ZxYxX"),
        (["invert", "{png}", "-k", "box:size=3", "--tile", "8", "--mode", "full",
          "-o", "{out}.png"],
         "--tile: a tiled invert needs --mode same, stride 1 and no --padding"),
        (["blind", "{png}", "-o", "{out}.png", "--kernel-size", "2"],
         "--kernel-size: `2` is not N"),
    ],
    ids=["comparison", "beads", "tiled_invert", "blind_run"],
)  # fmt: skip
def test_the_cli_stderr_names_the_flag(tmp_path, args, words):
    from PIL import Image

    png, npy = tmp_path / "in.png", tmp_path / "in.npy"
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(png)
    np.save(npy, np.zeros((24, 24, 24)))
    np.save(tmp_path / "img.npy", np.zeros((8, 8)))
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(
        tmp_path / "vol.tif", np.zeros((4, 8, 8), np.float32), photometric="minisblack"
    )
    where = {"png": png, "npy": npy, "tif": tmp_path / "vol.tif", "img": tmp_path / "img.npy"}
    where["out"] = tmp_path / "out"
    result = run(*(a.format(**where) for a in args))
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert not any(Path(p).name.startswith("out") for p in tmp_path.iterdir())


# -- notes and help texts: the library names parameters there too ---------------------


def _strings_outside_docstrings(tree):
    """Every string constant of a module but its docstrings (and the bare string statements
    that document attributes): docstrings are the code's documentation, read by whoever
    reads the code, where naming the flags that reach a function is what explains it;
    the program never prints them."""
    import ast

    documenting = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in documenting:
                yield node


def test_no_library_string_names_a_flag_of_the_command_line():
    import ast

    import deconv_cli
    from deconv_cli.cli import _flags

    flags = set(_flags().values())
    assert {"--iterations", "--method", "--kernel-size", "--noise-sigma"} <= flags
    root = Path(deconv_cli.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] == "cli":
            continue
        for node in _strings_outside_docstrings(ast.parse(path.read_text(encoding="utf-8"))):
            named = set(re.findall(r"--[a-z][a-z0-9-]*", node.value)) & flags
            if named:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {sorted(named)}")
    assert not found, "\n".join(found)


def test_the_scan_sees_flags_in_messages_and_skips_docstrings():
    import ast

    tree = ast.parse('"""doc --tol"""\ndef f():\n    """--tol"""\n    return f"raise --tol {1}"\n')
    assert [n.value for n in _strings_outside_docstrings(tree)] == ["raise --tol "]


def _capped_cgls_data(tmp_path):
    data = np.random.default_rng(0).random((16, 16))
    np.save(tmp_path / "y.npy", data)
    return data


def test_a_note_on_the_command_line_names_the_flags(tmp_path):
    _capped_cgls_data(tmp_path)
    result = run(
        "invert", tmp_path / "y.npy", "-k", "box:size=3", "-m", "cgls",
        "--iterations", "2", "--tol", "1e-30", "-o", tmp_path / "x.npy",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    note = next(line for line in result.output.splitlines() if ": note: " in line)
    assert "stopped at the iteration cap (2)" in note
    assert "raise --iterations or --tol" in note
    assert "\x1f" not in result.output and "`iterations`" not in result.output


def test_a_note_of_the_api_names_the_parameters(tmp_path):
    from deconv_cli import api

    data = _capped_cgls_data(tmp_path)
    result = api.invert(data, "box:size=3", method="cgls", iterations=2, tol=1e-30)
    assert result.converged is False
    (note,) = result.notes
    assert "raise `iterations` or `tol`" in note
    assert "--" not in note and "\x1f" not in note


def test_roundtrip_notes_name_the_flags_in_every_format(tmp_path):
    import json

    _capped_cgls_data(tmp_path)
    args = [
        "roundtrip", tmp_path / "y.npy", "-k", "gaussian:sigma=2", "--boundary", "wrap",
        "--noise", "gaussian:sigma=0.01", "--seed", "0", "-m", "pinv",
    ]  # fmt: skip
    as_json = run(*args, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    (row,) = [r for r in json.loads(as_json.stdout)["rows"] if r["method"] == "pinv"]
    assert row["note"].endswith("raise --rcond or use --method tikhonov"), row["note"]
    markdown = run(*args, "--format", "markdown")
    assert "raise --rcond or use --method tikhonov" in markdown.stdout
    assert "\x1f" not in as_json.output + markdown.output


def test_the_method_help_written_by_the_library_shows_flags():
    result = run("invert", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Stopping tolerance; 0 runs exactly --iterations." in text
    assert "pseudo-inverse truncated at --rcond:" in text
    assert "optional TV (--tv)" in text
    assert "\x1f" not in result.output and "`" not in text.split("Methods:")[-1]
