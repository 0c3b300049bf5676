"""Build ``samples/blobs3d.tif``: a small synthetic z-stack for the volume demo and docs.

    python samples/make_stack.py samples/blobs3d.tif

A phantom of nucleus-like blobs: ``skimage.data.binary_blobs`` in 3-D (80³ voxels,
seed 7), smoothed by a gaussian of σ = 1 voxel, its central 32 planes, on a dim
background (0.05 to 0.85 of the range), stored as an 8-bit ImageJ hyperstack
(Z×Y×X = 32×80×80, 205 KB) with a voxel size of 0.25 µm in z and 0.1 µm in y and x.
The same seed gives the same file.
"""

from __future__ import annotations

import sys

import numpy as np


def phantom() -> np.ndarray:
    """The stack as uint8, Z×Y×X."""
    from scipy import ndimage
    from skimage.data import binary_blobs

    blobs = binary_blobs(80, blob_size_fraction=0.15, n_dim=3, volume_fraction=0.15, rng=7)
    smooth = ndimage.gaussian_filter(blobs.astype(np.float64), 1.0)[24:56]
    return np.rint((0.05 + 0.8 * smooth) * 255).astype(np.uint8)


def main(path: str) -> None:
    import tifffile

    tifffile.imwrite(
        path,
        phantom(),
        imagej=True,
        resolution=(1 / 0.1, 1 / 0.1),
        metadata={"axes": "ZYX", "spacing": 0.25, "unit": "um"},
    )


if __name__ == "__main__":
    main(*sys.argv[1:] or ["samples/blobs3d.tif"])
