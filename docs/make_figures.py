"""Write the README's pictures into docs/images/ with the ``deconv`` command (``make figures``).

The tour in README.md shows them: ``samples/camera.png`` blurred by a gaussian of
σ = 2 with 1% noise, then the transpose, the exact inverse and the default inversion
of that data. Each picture is the output of one ``deconv`` command, printed as it runs;
the last command measures them all against the original. The noise is seeded, so a
rerun writes the same pictures. One more, for docs/guide/volumes.md: the central plane
of the bundled z-stack through several methods (``roundtrip --montage``).

Run from anywhere: ``python docs/make_figures.py`` (it runs ``python -m deconv_cli`` with
the interpreter that runs it).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = Path("docs/images")  # relative to ROOT, so the printed commands can be rerun as shown
KERNEL = "gaussian:sigma=2"
PSF = "widefield:na=1.4,wavelength=0.52,n=1.515,dxy=0.1,dz=0.25,size=15,depth=15"

COMMANDS = [
    ["convolve", "samples/camera.png", "-k", KERNEL, "--noise", "gaussian:sigma=0.01",
     "--seed", "0", "-o", f"{IMAGES}/blurred.png"],
    ["transpose", f"{IMAGES}/blurred.png", "-k", KERNEL, "-o", f"{IMAGES}/transposed.png"],
    ["invert", f"{IMAGES}/blurred.png", "-k", KERNEL, "-m", "inverse",
     "-o", f"{IMAGES}/exact_inverse.png"],
    ["invert", f"{IMAGES}/blurred.png", "-k", KERNEL, "-o", f"{IMAGES}/inverted.png"],
    # docs/guide/volumes.md: the bundled stack, its central plane through each method
    ["roundtrip", "samples/blobs3d.tif", "-k", PSF, "--noise", "poisson:peak=200", "--seed",
     "0", "--bits", "8", "-m", "wiener,tikhonov,richardson-lucy,cgls",
     "--montage", f"{IMAGES}/blobs3d_montage.png"],
]  # fmt: skip
MEASURE = ["compare", "samples/camera.png", *(f"{IMAGES}/{name}.png" for name in
           ("blurred", "transposed", "exact_inverse", "inverted")),
           "--metrics", "psnr,ssim", "--format", "markdown"]  # fmt: skip


def deconv(args: list[str]) -> None:
    """Run ``deconv ARGS`` from the repository's root, echoing the command; stop on failure."""
    print("$ deconv " + shlex.join(args), flush=True)
    subprocess.run([sys.executable, "-m", "deconv_cli", *args], cwd=ROOT, check=True)


def main() -> None:
    (ROOT / IMAGES).mkdir(parents=True, exist_ok=True)
    for args in COMMANDS:
        deconv([*args, "--overwrite", "-q"])
    deconv(MEASURE)


if __name__ == "__main__":
    main()
