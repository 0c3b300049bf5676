"""Draw docs/images/blind_clock.png: a real motion-blurred photo before and after
``deconv blind``, and the kernel it found.

The photo is scikit-image's ``clock`` (``clock_motion.png``: a clock photographed
with the camera moving horizontally). The command runs on the whole photo, with a
kernel bound of 51 px (the blur is longer than the default 31); the picture shows
its central 200×200 pixels, blurred (left) and restored (middle), and the estimated
kernel scaled to its peak and enlarged 4× (right).

Run from anywhere: ``python docs/make_blind_figure.py``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images" / "blind_clock.png"


def main() -> None:
    from skimage import data

    from deconv_cli.io import read_image, write_image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_image(tmp / "clock.png", data.clock() / 255.0)
        args = ["blind", "clock.png", "-o", "sharp.png", "--kernel-out", "kernel.npy",
                "--kernel-size", "51"]  # fmt: skip
        print("$ deconv " + shlex.join(args), flush=True)
        subprocess.run([sys.executable, "-m", "deconv_cli", *args], cwd=tmp, check=True)
        before = read_image(tmp / "clock.png").data
        after = np.clip(read_image(tmp / "sharp.png").data, 0, 1)
        kernel = np.load(tmp / "kernel.npy")
    h, w = before.shape
    frame = (slice(h // 2 - 100, h // 2 + 100), slice(w // 2 - 100, w // 2 + 100))
    big = np.kron(kernel / kernel.max(), np.ones((4, 4)))
    panel = np.zeros((200, big.shape[1]))
    top = (200 - big.shape[0]) // 2
    panel[top : top + big.shape[0]] = big[:200]
    gap = np.ones((200, 4))
    montage = np.hstack([before[frame], gap, after[frame], gap, panel])
    write_image(OUT, montage, dtype="uint8", overwrite=True)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
