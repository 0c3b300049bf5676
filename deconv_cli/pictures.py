"""Pictures for people: the inferno colour map, text, colour bars and the labelled montage.

Every picture a command draws without matplotlib is an ``(h, w, 3)`` uint8 RGB array
built here:

- :func:`colourize` maps levels in [0, 1] through matplotlib's exact ``inferno``
  table (:mod:`deconv_cli.inferno`), by matplotlib's rule: level ``v`` takes entry
  ``min(floor(256·v), 255)``, each entry rounded to 8 bits.
- :func:`text_block` draws lines of text with Pillow's built-in font (Pillow comes
  with imageio; FreeType gives a scalable font, otherwise Pillow's bitmap font).
- :func:`with_colour_bar` puts a vertical inferno bar, labelled with its values,
  to the right of a colourized picture.
- :func:`montage` lays captioned panels out in a grid.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

BACKGROUND = 48
TEXT = 255
FONT_SIZE = 12
LINE_HEIGHT = 16
PAD = 4
GAP = 4
PANEL_MIN = 128
PANEL_MAX = 512
BAR_WIDTH = 16
BAR_MIN_HEIGHT = 96
LABEL_WIDTH = 72


@functools.cache
def inferno_table() -> np.ndarray:
    """The inferno table as ``(256, 3)`` uint8: each entry ``rint(255·value)``."""
    from deconv_cli.inferno import INFERNO

    table = np.rint(np.asarray(INFERNO) * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


def colourize(levels: np.ndarray) -> np.ndarray:
    """Levels in [0, 1] (clipped; NaN as 0) as inferno RGB, shape ``levels.shape + (3,)``."""
    levels = np.nan_to_num(np.asarray(levels, dtype=np.float64), nan=0.0)
    index = np.clip(np.floor(levels * 256), 0, 255).astype(np.intp)
    return inferno_table()[index]


def displayed(image: np.ndarray) -> np.ndarray:
    """An image on the [0, 1] scale as shown: float, clipped to [0, 1], NaN as 0.

    Grey ``(h, w)`` and RGB ``(h, w, 3)`` stay as they are (one channel becomes
    grey); any other number of channels is laid out side by side in a square grid of
    grey tiles.
    """
    a = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64)), 0.0, 1.0)
    if a.ndim == 3 and a.shape[2] == 1:
        return a[:, :, 0]
    if a.ndim == 3 and a.shape[2] != 3:
        side = math.ceil(math.sqrt(a.shape[2]))
        h, w = a.shape[:2]
        grid = np.zeros((side * h, side * w))
        for c in range(a.shape[2]):
            row, col = divmod(c, side)
            grid[row * h : (row + 1) * h, col * w : (col + 1) * w] = a[:, :, c]
        return grid
    return a


def to_rgb8(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1], grey ``(h, w)`` or RGB, as ``(h, w, 3)`` uint8: ``rint(255·v)``."""
    levels = np.rint(values * 255).astype(np.uint8)
    return np.repeat(levels[:, :, None], 3, axis=2) if levels.ndim == 2 else levels


@functools.cache
def _font():
    from PIL import ImageFont

    return ImageFont.load_default(size=FONT_SIZE)


def text_block(lines: Sequence[str], width: int) -> np.ndarray:
    """``lines`` of white text on the background, ``(len(lines)·LINE_HEIGHT + 2·PAD, width, 3)``.

    Text wider than ``width`` is cut at the right edge.
    """
    from PIL import Image, ImageDraw

    height = len(lines) * LINE_HEIGHT + 2 * PAD
    canvas = Image.new("RGB", (int(width), height), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((PAD, PAD + i * LINE_HEIGHT), line, fill=(TEXT,) * 3, font=_font())
    return np.asarray(canvas)


def with_colour_bar(picture: np.ndarray, low: str, high: str, title: str) -> np.ndarray:
    """``picture`` with a vertical inferno colour bar on its right, ``high`` at the top.

    The bar runs over the full table (its row ``r`` of ``n`` has level
    ``1 − r/(n − 1)``), labelled ``high`` at its top and ``low`` at its bottom, under
    the one-line ``title``. The canvas is at least :data:`BAR_MIN_HEIGHT` tall.
    """
    h, w = picture.shape[:2]
    bar_top = LINE_HEIGHT + 2 * PAD
    bar_height = max(h, BAR_MIN_HEIGHT) - bar_top
    height = bar_top + bar_height
    width = w + GAP + BAR_WIDTH + LABEL_WIDTH
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    canvas[:h, :w] = picture
    levels = 1.0 - np.arange(bar_height) / max(bar_height - 1, 1)
    left = w + GAP
    canvas[bar_top:, left : left + BAR_WIDTH] = colourize(levels)[:, None, :]
    title_strip = text_block([title], BAR_WIDTH + LABEL_WIDTH)
    canvas[: title_strip.shape[0], left:] = title_strip[: min(height, title_strip.shape[0])]
    for text, top in ((high, bar_top - PAD), (low, height - LINE_HEIGHT - PAD)):
        label = text_block([text], LABEL_WIDTH)
        rows = slice(max(top, 0), max(top, 0) + label.shape[0])
        room = canvas[rows, left + BAR_WIDTH :]
        room[:] = label[: room.shape[0]]
    return canvas


def scale_factor(shapes: Sequence[tuple[int, ...]]) -> int:
    """One scale for all panels: ``k > 0`` enlarges ``k`` times, ``k < 0`` shrinks ``|k|`` times.

    The largest side is brought to [:data:`PANEL_MIN`, :data:`PANEL_MAX`] by a whole
    factor where possible (``1``: as they are).
    """
    longest = max(max(shape[:2]) for shape in shapes)
    if longest < PANEL_MIN:
        return math.ceil(PANEL_MIN / longest)
    if longest > PANEL_MAX:
        return -math.ceil(longest / PANEL_MAX)
    return 1


def rescale(image: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge by pixel repetition (``factor > 0``) or shrink by the mean of whole
    ``|factor|``-sided blocks (``factor < 0``; a remainder at the bottom/right is dropped)."""
    if factor > 0:
        return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    k = -factor
    h, w = (image.shape[0] // k) * k, (image.shape[1] // k) * k
    blocks = image[:h, :w].reshape(h // k, k, w // k, k, *image.shape[2:])
    return blocks.mean(axis=(1, 3))


def montage(panels: Sequence[tuple[np.ndarray, Sequence[str]]], *, columns: int = 4) -> np.ndarray:
    """Captioned panels in a grid, left to right and top to bottom, as uint8 RGB.

    Parameters
    ----------
    panels : sequence of (image, caption lines)
        Images on the [0, 1] scale (see :func:`displayed`), each with its caption.
    columns : int
        Panels per row (fewer when there are fewer panels).

    Notes
    -----
    Every image is rescaled by the same :func:`scale_factor` (before rounding to 8
    bits), so sizes compare.
    A cell is ``cell_w = max(PANEL_MIN, widest tile)`` wide and
    ``tallest tile + caption`` high, the caption ``max lines · LINE_HEIGHT + 2·PAD``
    high; cells are :data:`GAP` apart and from the edges. A tile is centred
    horizontally at the top of its cell; its caption starts under the tallest tile.
    """
    shown = [displayed(image) for image, _ in panels]
    factor = scale_factor([values.shape for values in shown])
    tiles = [to_rgb8(rescale(values, factor)) for values in shown]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    tile_h = max(tile.shape[0] for tile in tiles)
    cell_w = max(PANEL_MIN, max(tile.shape[1] for tile in tiles))
    lines = max(len(caption) for _, caption in panels)
    caption_h = lines * LINE_HEIGHT + 2 * PAD
    cell_h = tile_h + caption_h
    canvas = np.full(
        (rows * (cell_h + GAP) + GAP, columns * (cell_w + GAP) + GAP, 3), BACKGROUND, np.uint8
    )
    for i, (tile, (_, caption)) in enumerate(zip(tiles, panels, strict=True)):
        top = GAP + (i // columns) * (cell_h + GAP)
        left = GAP + (i % columns) * (cell_w + GAP)
        offset = left + (cell_w - tile.shape[1]) // 2
        canvas[top : top + tile.shape[0], offset : offset + tile.shape[1]] = tile
        strip = text_block(list(caption) + [""] * (lines - len(caption)), cell_w)
        canvas[top + tile_h : top + cell_h, left : left + cell_w] = strip
    return canvas
