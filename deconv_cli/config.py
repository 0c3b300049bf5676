"""Run-time settings of the library, passed explicitly: the pixel limit.

The library never sets environment variables to configure itself. A
:class:`Config` is in force in a context (a :mod:`contextvars` variable, like
``scipy.fft.set_workers``): :func:`use` sets it for a block, :func:`current`
reads it. The command line sets it once, at its edge, from ``deconv --max-pixels N``;
a batch hands the :class:`Config` in force to its worker processes with each item.

When no context sets one, the defaults apply, with ``DECONV_MAX_PIXELS`` (read from
the environment, never written) overriding the pixel limit — so a session can raise
the limit for every command without repeating the flag.

Examples
--------
>>> from deconv_cli import config
>>> with config.use(max_pixels=1_000_000):
...     config.current().max_pixels
1000000
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass

from deconv_cli.errors import InputError

DEFAULT_MAX_PIXELS = 2**28
MAX_PIXELS_ENV = "DECONV_MAX_PIXELS"


@dataclass(frozen=True)
class Config:
    """Settings the library reads while it works.

    Attributes
    ----------
    max_pixels : int
        The largest image (H×W) read, checked on the file's header before any
        pixel is decoded (against decompression bombs); geometries whose padded
        image or dilated kernel exceed 4× this are refused too.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if isinstance(self.max_pixels, bool) or int(self.max_pixels) != self.max_pixels:
            raise InputError(
                f"`{self.max_pixels}` is not a whole number of pixels", parameter="max_pixels"
            )
        if self.max_pixels <= 0:
            raise InputError(
                f"`{self.max_pixels}` is not a positive number of pixels", parameter="max_pixels"
            )


_current: contextvars.ContextVar[Config | None] = contextvars.ContextVar(
    "deconv_config", default=None
)


def from_environment() -> Config:
    """The defaults, with ``DECONV_MAX_PIXELS`` applied when it is set.

    Raises
    ------
    InputError
        The variable is set to something other than a positive whole number.
    """
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None or not raw.strip():
        return Config()
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(f"{MAX_PIXELS_ENV}: `{raw}` is not a positive whole number of pixels")
    return Config(max_pixels=value)


def current() -> Config:
    """The :class:`Config` in force: the innermost :func:`use`, else :func:`from_environment`."""
    config = _current.get()
    return from_environment() if config is None else config


@contextlib.contextmanager
def use(config: Config | None = None, **changes) -> Iterator[Config]:
    """Put ``config`` (default: the one in force), with ``changes`` applied, in force.

    Parameters
    ----------
    config : Config, optional
        The settings; None starts from :func:`current`.
    **changes
        Fields to replace, e.g. ``max_pixels=10**8``.

    Yields
    ------
    Config
        The settings in force inside the block.
    """
    config = dataclasses.replace(current() if config is None else config, **changes)
    token = _current.set(config)
    try:
        yield config
    finally:
        _current.reset(token)
