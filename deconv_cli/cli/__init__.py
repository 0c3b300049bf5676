"""The ``deconv`` command line: a click group; each command parses, calls the core, reports.

Exit codes are defined in :mod:`deconv_cli.errors`; the mapping from core errors to
exit codes happens here, in :class:`DeconvGroup`, and nowhere else.
"""

from __future__ import annotations

import sys

import click

from deconv_cli import __version__
from deconv_cli.errors import EXIT_USAGE, DeconvError


class DeconvGroup(click.Group):
    """A click group that turns core errors into one line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DeconvError as err:
            click.echo(f"deconv: error: {err}", err=True)
            ctx.exit(err.exit_code)
        except MemoryError:
            click.echo("deconv: error: not enough memory for this job", err=True)
            ctx.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("deconv: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=DeconvGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="deconv")
def main() -> None:
    """Blur and deblur images, and find out when a blur can be undone.

    \b
    convolve   blur with a kernel (any boundary, stride, dilation, padding)
    transpose  apply the exact adjoint: restores the shape, not the values
    invert     true deconvolution: recover the values where the maths allows
    compare    reconstruction error metrics, with thresholds for CI
    analyze    is this operator invertible, and how well?
    roundtrip  blur, transpose and invert one image, in one table
    kernels    list kernel families, or show one kernel
    """


def _register() -> None:
    from deconv_cli.cli import analyze, compare, invert, kernels, process

    for module in (process, invert, compare, analyze, kernels):
        for command in module.COMMANDS:
            main.add_command(command)


_register()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
