"""Tests for deconv_cli.config: settings passed explicitly, never written to the environment."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deconv_cli import batch, batch_run, config, io
from deconv_cli.errors import GeometryError, InputError


@pytest.fixture(autouse=True)
def no_variable(monkeypatch):
    monkeypatch.delenv(config.MAX_PIXELS_ENV, raising=False)


def test_use_nests_and_restores():
    assert config.current().max_pixels == 2**28
    with config.use(max_pixels=1000) as outer:
        assert config.current() is outer
        with config.use(max_pixels=10):
            assert config.current().max_pixels == 10
        assert config.current().max_pixels == 1000
    assert config.current().max_pixels == 2**28
    assert config.MAX_PIXELS_ENV not in os.environ  # nothing written


def test_environment_is_the_default_and_a_context_wins(monkeypatch):
    monkeypatch.setenv(config.MAX_PIXELS_ENV, "1_000")
    assert config.current().max_pixels == 1000
    with config.use(max_pixels=5):
        assert config.current().max_pixels == 5


@pytest.mark.parametrize("value", [0, -3, 2.5, True], ids=["zero", "neg", "float", "bool"])
def test_bad_limits_refused(value):
    with pytest.raises(InputError, match="max_pixels"):
        config.Config(max_pixels=value)


def test_read_image_takes_the_limit_as_an_argument(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((10, 10)))
    with pytest.raises(InputError, match=r"100 pixels \(10×10\), above the limit of 99"):
        io.read_image(tmp_path / "a.npy", max_pixels=99)
    with config.use(max_pixels=99):
        assert io.read_image(tmp_path / "a.npy", max_pixels=100).data.shape == (10, 10)


def test_geometry_limit_follows_the_setting():
    from deconv_cli.operators import check_extent

    check_extent("--padding", "padded image", (20, 20))
    with config.use(max_pixels=99), pytest.raises(GeometryError, match="above the limit of 396"):
        check_extent("--padding", "padded image", (20, 20))


def test_batch_items_carry_the_setting_to_workers(tmp_path):
    """A worker process runs process_item outside the CLI's context: the setting travels
    with the batch's Settings, captured where the batch was planned."""
    from deconv_cli.kernels import load_kernel
    from deconv_cli.operators import Geometry
    from deconv_cli.process import Convolve

    np.save(tmp_path / "a.npy", np.zeros((16, 16)))
    with config.use(max_pixels=255):
        settings = batch.Settings(Convolve(load_kernel("box"), Geometry()))
    item = batch.plan(batch.collect([str(tmp_path / "a.npy")]), str(tmp_path / "out.npy"))[0]
    result = batch_run.process_item(item, settings)  # no context here: the default is 2**28
    assert result.status == "failed"
    assert "256 pixels (16×16), above the limit of 255" in result.message
    assert not Path(tmp_path / "out.npy").exists()


def test_the_flag_wins_over_a_bad_variable(monkeypatch):
    from click.testing import CliRunner

    from deconv_cli.cli import main

    monkeypatch.setenv(config.MAX_PIXELS_ENV, "lots")
    runner = CliRunner()
    args = ["analyze", "-k", "box", "--shape", "8x8"]
    assert runner.invoke(main, ["--max-pixels", "100", *args]).exit_code == 0
    refused = runner.invoke(main, args)
    assert refused.exit_code == 2
    assert "DECONV_MAX_PIXELS: `lots` is not a positive whole number" in refused.output
    assert os.environ[config.MAX_PIXELS_ENV] == "lots"
