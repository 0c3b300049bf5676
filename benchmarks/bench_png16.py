"""16-bit colour PNG: deconv's codec (imagecodecs, libpng) against pypng (pure Python).

Pillow has no 16-bit colour mode (it reads such PNGs as 8-bit and cannot write them), so
one of these two does it; this measures which. A smooth 1024×1024 RGB uint16 image with
noise (compressible as photographs are) is encoded by each, and decoded by each from its
own file (pypng unfilters in Python, so a file with row filters, as libpng writes, decodes
slower still in pypng), alternated A/B in one process, 5 pairs. The medians of the paired
time ratios are printed (the machine may be shared: absolute times drift, ratios of
neighbouring runs much less), with the file sizes and whether each decodes the other's
file exactly.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import png

from deconv_cli import codecs

SIZE = 1024
PAIRS = 5


def pypng_encode(pixels: np.ndarray) -> bytes:
    height, width, planes = pixels.shape
    writer = png.Writer(width, height, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=16)
    buffer = io.BytesIO()
    writer.write_array(buffer, pixels.reshape(-1))
    return buffer.getvalue()


def pypng_decode(data: bytes) -> np.ndarray:
    width, height, rows, info = png.Reader(bytes=data).asDirect()
    return np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(height, width, -1)


def deconv_encode(pixels: np.ndarray, tmp: Path) -> bytes:
    codecs.write_png(tmp, pixels, False)
    return tmp.read_bytes()


def deconv_decode(path: Path) -> np.ndarray:
    head = path.read_bytes()[:64]
    return codecs.read_png(path, head, SIZE * SIZE, None)[0]


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    smooth = np.stack([np.sin(6 * x + k) * np.cos(4 * y) for k in range(3)], axis=-1)
    pixels = ((smooth + 1) / 2 * 60000 + rng.integers(0, 500, smooth.shape)).astype(np.uint16)
    with tempfile.TemporaryDirectory() as folder:
        ours, theirs = Path(folder) / "ours.png", Path(folder) / "theirs.png"
        encode, decode = [], []
        for _ in range(PAIRS):
            t_theirs, data = timed(pypng_encode, pixels)
            theirs.write_bytes(data)
            t_ours, _ = timed(deconv_encode, pixels, ours)
            encode.append(t_theirs / t_ours)
            t_theirs, _ = timed(pypng_decode, theirs.read_bytes())  # each its own file
            t_ours, _ = timed(deconv_decode, ours)
            decode.append(t_theirs / t_ours)
        exact = np.array_equal(pypng_decode(ours.read_bytes()), pixels) and np.array_equal(
            deconv_decode(theirs), pixels
        )
        print(f"{SIZE}×{SIZE}×3 uint16, {PAIRS} alternated pairs, time pypng / deconv (median):")
        print(
            f"  encode {statistics.median(encode):.1f}x   decode {statistics.median(decode):.1f}x"
        )
        print(f"  file size: deconv {ours.stat().st_size:,} B, pypng {theirs.stat().st_size:,} B")
        print(f"  each decodes the other's file exactly: {exact}")


if __name__ == "__main__":
    main()
