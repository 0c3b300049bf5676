"""``deconv compare``: reconstruction error metrics, with thresholds for CI."""

from __future__ import annotations

import click

from deconv_cli.cli.options import axes_option, format_option
from deconv_cli.errors import EXIT_CHECK_FAILED, CommandFailed

METRIC_NAMES = ("mse", "rmse", "nrmse", "psnr", "ssim", "mae", "max_error")
FORMATS = ("table", "json", "csv", "markdown")

# (option, metric, help): maxima for error metrics, minima for psnr/ssim.
THRESHOLDS = (
    ("--max-mse", "mse", "Fail a row whose MSE is above this."),
    ("--max-rmse", "rmse", "Fail a row whose RMSE is above this."),
    ("--max-nrmse", "nrmse", "Fail a row whose NRMSE is above this."),
    ("--min-psnr", "psnr", "Fail a row whose PSNR (dB) is below this."),
    ("--min-ssim", "ssim", "Fail a row whose SSIM is below this."),
    ("--max-mae", "mae", "Fail a row whose MAE is above this."),
    ("--max-error", "max_error", "Fail a row whose largest absolute error is above this."),
)


def _a_number(ctx, param, value):
    if value is not None and value != value:  # NaN passes every comparison
        raise click.BadParameter(f"`{value}` is not a number", ctx=ctx, param=param)
    return value


def _threshold_options(func):
    for option, metric, text in reversed(THRESHOLDS):
        func = click.option(
            option,
            f"threshold_{metric}",
            type=float,
            default=None,
            callback=_a_number,
            help=text,
        )(func)
    return func


def _split_metrics(values: tuple[str, ...]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


@click.command("compare")
@click.argument("reference", type=click.Path(path_type=str))
@click.argument(
    "candidates", nargs=-1, required=True, type=click.Path(path_type=str), metavar="CANDIDATE..."
)
@click.option(
    "-m",
    "--metrics",
    multiple=True,
    metavar="NAME[,NAME...]",
    help=f"Metrics to report (default: all): {', '.join(METRIC_NAMES)}. "
    "A metric with a threshold is always reported.",
)
@_threshold_options
@click.option(
    "--data-range",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="R",
    help="Width of the value scale of float files (e.g. 255), which are divided by it. "
    "Required for float data outside [0, 1]. Integer files always use their dtype's maximum.",
)
@click.option(
    "--ignore-border",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="N",
    help="Crop N pixels from every side of both images before measuring.",
)
@click.option("--per-channel", is_flag=True, help="Add one row per channel of colour images.")
@click.option(
    "--per-slice", is_flag=True, help="Add one row per plane (z) of volumes: 2-D metrics."
)
@axes_option
@format_option(FORMATS)
@click.option(
    "--diff",
    type=click.Path(path_type=str),
    default=None,
    metavar="PATH",
    help="Write a heat map of |candidate - reference| with a colour bar: a file for one "
    "pair, else a directory of <candidate>.diff.png.",
)
@click.option(
    "--diff-range",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="R",
    help="The --diff colour scale: |difference| from 0 (black) to R (pale yellow; larger "
    "differences too), on the [0, 1] scale. Default 0.1 (10% of the range) for every map, "
    "so maps of different pairs and runs compare.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing --diff files.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on stderr.")
def compare(
    reference: str,
    candidates: tuple[str, ...],
    metrics: tuple[str, ...],
    data_range: float | None,
    ignore_border: int,
    per_channel: bool,
    per_slice: bool,
    axes: str | None,
    fmt: str,
    diff: str | None,
    diff_range: float | None,
    overwrite: bool,
    quiet: bool,
    **threshold_values: float | None,
) -> None:
    """Measure CANDIDATE images against REFERENCE: one row per candidate.

    With two directories, REF_DIR CAND_DIR, files are paired by name (stem,
    any image extension); a file without a partner is a failed row.

    Values are on the [0, 1] scale: integer images are divided by their dtype's
    maximum (8- and 16-bit results are comparable), data range 1. Float images
    are used as they are and must lie in [0, 1] unless --data-range is given.
    Alpha is ignored. PSNR of identical images is `inf` ("inf" in JSON/CSV).

    Volumes (TIFF stacks; .npy with --axes ZYX...) are measured over every voxel,
    SSIM with a 7×7×7 window; --diff maps the largest difference along z.

    Thresholds are inclusive. Exit code 0 when every row passes, 1 when any
    fails (failing values are marked), 2 on bad usage or unreadable input.

    \b
    Examples:
      deconv compare sharp.png restored.png
      deconv compare sharp.png wiener.png tv.png --metrics psnr,ssim
      deconv compare refs/ results/ --per-channel --format markdown > report.md
      deconv compare sharp.npy restored.npy --data-range 255 --diff diff.png
      deconv compare sharp.png wiener.png tv.png --diff diffs/ --diff-range 0.05
      deconv compare truth.tif restored.tif --per-slice --metrics psnr,ssim
      deconv compare truth.npy restored.npy --axes ZYX
    \b
    In CI (fails the job if any image falls below the limits):
      deconv compare expected/ actual/ --min-psnr 35 --min-ssim 0.95 \\
          --format json > compare.json
    """
    from deconv_cli import report
    from deconv_cli.comparison import compare_images
    from deconv_cli.metrics import resolve_metrics

    names = resolve_metrics(_split_metrics(metrics))
    thresholds = {
        key.removeprefix("threshold_"): value
        for key, value in threshold_values.items()
        if value is not None
    }
    result = compare_images(
        reference,
        candidates,
        metrics=names,
        thresholds=thresholds,
        data_range=data_range,
        ignore_border=ignore_border,
        per_channel=per_channel,
        per_slice=per_slice,
        axes=axes,
        diff=diff,
        diff_range=diff_range,
        overwrite=overwrite,
    )

    columns = report.compare_columns(result.metrics, per_channel=per_channel, per_slice=per_slice)
    caption = report.compare_caption(
        result.passed_count, len(result.pairs), result.worst(("psnr", "ssim"))
    )
    rows = [row.as_dict() for row in result.rows]
    if fmt == "table":
        from deconv_cli.cli.output import print_table

        print_table(rows, columns, after=[caption])
    else:
        click.echo(report.render(rows, columns, fmt, caption=caption), nl=False)
        if not quiet and fmt != "markdown":
            click.echo(caption, err=True)
    if not quiet:
        for pair in result.pairs:
            if pair.diff is not None:
                click.echo(f"wrote {pair.diff.path}: {_diff_summary(pair.diff)}", err=True)
    if not result.passed:
        raise CommandFailed(EXIT_CHECK_FAILED)


def _diff_summary(diff) -> str:
    """E.g. ``0 (black) to 0.1 (pale yellow); max |difference| 0.0123``."""
    text = f"0 (black) to {diff.diff_range:.4g} (pale yellow); max |difference| "
    text += f"{diff.max_difference:.4g}"
    if diff.saturated:
        text += f", {diff.saturated} pixels above the range (pale yellow)"
    return text


COMMANDS = [compare]
