"""The method registry: every method's facts reach the CLI, tiling and the memory estimate.

Parametrized over the registry, so a new method, or a new option, is covered without
editing this file.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from deconv_cli.cli import flag, main
from deconv_cli.errors import DeconvError
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.restore import OPTIONS, Method, RestoreOptions, check_options, methods

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "cli.md"
METHODS = methods()
TAKEN = [(m.name, o) for m in METHODS.values() for o in m.options]


def test_every_option_is_a_field_of_restore_options():
    assert set(OPTIONS) <= {f.name for f in dataclasses.fields(RestoreOptions)}


def _method_line(text: str, name: str) -> str:
    """The ``invert --help`` entry of method ``name``, its wrapped lines joined."""
    lines = text.split("Methods:", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
    entry = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("   "):  # the next method, or the end
            break
        entry.append(line)
    return re.sub(r"-\s+", "-", " ".join(" ".join(entry).split()))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_lists_its_flags_in_help_and_reference(name):
    help_text = CliRunner().invoke(main, ["invert", "--help"], terminal_width=100).output
    reference = REFERENCE.read_text()
    for text in (help_text, reference.split("## deconv invert", 1)[1]):
        line = _method_line(text, name)
        for option in METHODS[name].options:
            automatic = option in METHODS[name].automatic  # marked `*`
            assert flag(option) in line, (name, option, line)
            assert (f"{flag(option)}*" in line) == automatic, (name, option, line)
            assert f"  {flag(option)} " in text  # the flag's own entry


@pytest.mark.parametrize("method,option", TAKEN, ids=[f"{m}-{o}" for m, o in TAKEN])
def test_an_option_out_of_range_is_one_line_naming_the_flag(tmp_path, method, option):
    spec = OPTIONS[option]
    below = spec.low if spec.low_open else spec.low - 1
    values = [below, float("nan")] if spec.type is float else [below]
    if spec.high is not None:  # the data are on a [0, 1] scale: relative limits as given
        values.append(spec.high if spec.high_open else spec.high * 10)
    np.save(tmp_path / "y.npy", np.random.default_rng(1).random((12, 12)))
    out = tmp_path / "x.npy"
    for value in values:
        shown = f"{value:g}" if spec.type is float else str(int(value))
        argv = ["invert", tmp_path / "y.npy", "-k", "box:size=3", "-m", method, "-o", out]
        result = CliRunner().invoke(main, [*map(str, argv), flag(option), shown])
        assert result.exit_code == 2, (value, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("deconv: error: "), result.stderr
        assert flag(option) in lines[0] and f" {option}:" not in lines[0]
        assert not out.exists()


def test_library_errors_name_the_parameter_not_the_flag():
    with pytest.raises(DeconvError) as caught:
        check_options(RestoreOptions(noise_sigma=1e9), np.zeros((4, 4)))
    assert caught.value.parameter == "noise_sigma"
    assert str(caught.value).startswith("noise_sigma: `1e+09` is above the largest accepted")
    assert "--" not in str(caught.value)


def test_errors_keep_their_parameter_across_processes():
    import pickle

    err = pickle.loads(pickle.dumps(DeconvError("`0` must be at least 1", parameter="iterations")))
    assert err.parameter == "iterations" and str(err) == "iterations: `0` must be at least 1"


def test_a_parameter_named_inside_a_message_is_said_as_its_reader_knows_it():
    """The library says `name` / `name=value`; the command line the flag (the bare flag
    for True), across processes too (a batch worker's error)."""
    import pickle

    from deconv_cli.cli import shown
    from deconv_cli.errors import OutputError, mention

    detail = (
        f"`x.png` exists; use {mention('overwrite', True)}, or a {mention('name')} "
        f"template, or {mention('fmt', 'png')}"
    )
    err = pickle.loads(pickle.dumps(OutputError(detail, parameter="output")))
    assert str(err) == (
        "output: `x.png` exists; use `overwrite=True`, or a `name` template, or `fmt=png`"
    )
    assert shown(err) == (
        "--output: `x.png` exists; use --overwrite, or a --name template, or --format png"
    )


def test_flags_are_the_commands_own():
    assert [flag(p) for p in ("noise_sigma", "kernel_spec", "fmt", "engine")] == [
        "--noise-sigma",
        "--kernel",
        "--format",
        "engine",  # no flag sets it: the parameter's own name
    ]


@pytest.mark.parametrize("method", [None, "magic"])
def test_memory_estimate_refuses_an_unknown_method(method):
    from deconv_cli.memory import estimate_bytes

    with pytest.raises(DeconvError, match=f"method: `{method}` is not one of `inverse`"):
        estimate_bytes("invert", (64, 64), np.ones((3, 3)) / 9, Geometry(), method=method)


def test_memory_estimate_reads_each_method_footprint():
    """Measured copies (a closed form where the DCT diagonalizes, else the general path)."""
    from deconv_cli.memory import FIXED_BYTES, estimate_bytes

    kernel, pixels = np.ones((3, 3)) / 9, 256 * 256 * 8
    for name, method in METHODS.items():
        for boundary, diagonal in (("reflect", True), ("nearest", False)):
            geometry = Geometry.create(boundary=boundary)
            need = estimate_bytes("invert", (256, 256), kernel, geometry, method=name)
            expected = method.memory(diagonal=diagonal, bank=False)
            assert need == FIXED_BYTES + int(expected * pixels), (name, boundary)
    assert METHODS["tikhonov"].memory(diagonal=True, bank=False) < 5  # the closed form


def test_roundtrip_help_names_the_registry_default():
    from deconv_cli.restore import roundtrip_methods

    text = " ".join(CliRunner().invoke(main, ["roundtrip", "--help"]).output.split())
    assert f"(default: {', '.join(roundtrip_methods())})" in text


# -- tiling freezes what the data chose ---------------------------------------------------

FROZEN = [m.name for m in METHODS.values() if m.automatic or m.stops_by_data]


def _problem():
    from skimage import data

    from deconv_cli.kernels import load_kernel

    scene = data.camera()[::4, ::4] / 255.0  # 128x128
    kernel = load_kernel("gaussian:sigma=1.5").array
    y = ConvOperator(kernel, scene.shape, Geometry()).forward(scene)
    return y + 0.01 * np.random.default_rng(9).standard_normal(y.shape), kernel


@pytest.mark.parametrize("name", FROZEN)
def test_tiling_freezes_every_automatic_choice(name):
    """A tiled run equals the tiled run given the pilot's choices explicitly, and the
    pilot (the whole 128x128 image, below the pilot side) chose what the whole-image run
    chooses; tiles left to choose would choose otherwise."""
    from deconv_cli.inversion import build_problem, invert
    from deconv_cli.tiled_invert import tiled_invert

    y, kernel = _problem()
    method = METHODS[name]
    takes_sigma = "noise_sigma" in method.options and "noise_sigma" not in method.automatic
    given = RestoreOptions(
        noise_sigma=0.01 if takes_sigma else None,
        iterations=20 if "iterations" in method.options else None,  # fast; still a cap
    )
    tiled = tiled_invert(y, kernel, Geometry(), name, given, 64)
    chosen = METHODS[tiled.method]
    frozen = {
        n: tiled.params[n]
        for n in chosen.automatic
        if getattr(given, n) is None and isinstance(tiled.params.get(n), float)
    }
    explicit = dataclasses.replace(given, **frozen)
    if chosen.stops_by_data is not None and chosen.stops_by_data(explicit):
        explicit = dataclasses.replace(explicit, iterations=tiled.iterations, tol=0.0)
    assert explicit != given  # something was chosen from the data
    again = tiled_invert(y, kernel, Geometry(), tiled.method, explicit, 64)
    np.testing.assert_array_equal(tiled.image, again.image)

    def run(data, options, method=name):
        problem = build_problem(kernel, data.shape, Geometry())
        return invert(data, problem, method, options)

    if name != "auto":  # auto on a tile is given its noise estimate: a different pilot
        whole = run(y, given)
        assert all(whole.params[n] == v for n, v in frozen.items())
        if explicit.tol == 0:
            assert tiled.iterations == whole.iterations
    # the check can fail: tiles left to choose for themselves give another result
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Method, "freeze", lambda self, options, pilot: options)
        unfrozen = tiled_invert(y, kernel, Geometry(), name, given, 64)
    assert np.abs(unfrozen.image - tiled.image).max() > 1e-6


def test_a_batch_item_failure_names_the_flag(tmp_path):
    """The limit of --lam is relative to each image's scale: checked per item."""
    for name, scale in (("a", 1), ("b", 1000)):
        np.save(tmp_path / f"{name}.npy", scale * np.random.default_rng(2).random((12, 12)))
    argv = ["invert", tmp_path / "a.npy", tmp_path / "b.npy", "-k", "box:size=3", "-m", "tv"]
    result = CliRunner().invoke(main, [*map(str, argv), "--lam", "2e9", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert "--lam: `2e+09` is above the largest accepted, 1e+09" in result.output
    assert " lam:" not in result.output
    assert (tmp_path / "o" / "b.npy").exists() and not (tmp_path / "o" / "a.npy").exists()


def test_a_standard_input_item_keeps_the_flag(tmp_path):
    """Errors of an item read from standard input are relabelled (the streams, not the
    spool files) without losing the parameter the CLI shows as a flag."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, 1000 * np.random.default_rng(3).random((12, 12)))
    argv = ["invert", "-", "-k", "box:size=3", "-m", "tv", "--lam", "1e13", "-o", "-"]
    result = CliRunner().invoke(main, argv, input=buffer.getvalue())
    assert result.exit_code == 2, result.output
    assert "deconv: error: --lam: `1e+13` is above the largest accepted" in result.stderr


def test_method_functions_accept_0_where_the_registry_refuses_it():
    """One range per option, in OPTIONS; the method functions (`check`) accept 0 for the
    options open at 0 (the term is off), `check_options` (the commands, `invert`) does not."""
    from deconv_cli.restore import check
    from deconv_cli.restore.richardson_lucy import richardson_lucy

    rng = np.random.default_rng(0)
    y = rng.random((24, 24)) + 0.1
    op = ConvOperator(np.full((3, 3), 1 / 9), y.shape, Geometry())
    plain = richardson_lucy(y, op, iterations=4, tol=0)
    off = richardson_lucy(y, op, iterations=4, tol=0, tv=0)
    np.testing.assert_array_equal(off.image, plain.image)
    with pytest.raises(DeconvError, match=r"^tv: `0` must be a finite number > 0$"):
        check_options(RestoreOptions(tv=0), y)
    for name in ("reg", "nsr", "lam", "tv", "rcond", "noise_sigma"):
        check(name, 0)  # accepted: no error
    for name, value, message in (
        ("iterations", 0, "iterations: `0` must be at least 1"),
        ("iterations", 2.5, "iterations: `2.5` must be a whole number"),
        ("tol", -1e-9, "tol: `-1e-09` must be 0 or positive"),
        ("tv", -1, "tv: `-1` must be a finite number > 0"),
        ("rcond", 1, "rcond: `1` must be below 1"),
        ("lam", float("nan"), "lam: `nan` must be a finite number"),
    ):
        with pytest.raises(DeconvError) as caught:
            check(name, value)
        assert str(caught.value) == message
    with pytest.raises(DeconvError, match="^tv: "):
        richardson_lucy(y, op, tv=-1)
