"""Noise estimation against the truth: the std of (data - clean blurred image).

scikit-image's shipped images (central crops of at most 256×256; astronaut and rocket
in colour) blurred (reflect) by gaussian σ 1 and 3, disk r 3 and motion 15 px at 30°,
then:

- *white*: gaussian noise σ 0.001 … 0.05 on float data;
- *poisson*: counts of ``photons`` for 1.0 (var = y / photons) plus gaussian σ 0.002;
- *8-bit*: gaussian noise σ 0 … 0.02, clipped and rounded to ``k / 255``;
- *jpeg*: the 8-bit image (σ 0 or 0.01) saved by Pillow at quality 75 and 90 and read
  back, estimated with the file's tables (``tables``) and from the pixels alone.

Prints, per noise type, the worst and the mean relative error of σ̂ against the true
std, for ``estimate_noise`` and for the wavelet MAD (``estimate_noise_sigma``); for
Poisson also the gain's error against ``1 / photons``; the kinds reported. Arguments
select noise types (``python benchmarks/bench_noise.py jpeg`` runs the JPEG cases).
"""

from __future__ import annotations

import io
import sys
from collections import defaultdict

import numpy as np
from scipy import ndimage

from deconv_cli.kernels import load_kernel
from deconv_cli.noise_jpeg import jpeg_tables_from_file
from deconv_cli.noise_model import estimate_noise, estimate_noise_sigma

IMAGES = ("camera coins text brick grass gravel cell microaneurysms page rocket astronaut").split()
KERNELS = ("gaussian:sigma=1", "gaussian:sigma=3", "disk:radius=3", "motion:length=15,angle=30")
WHITE = (0.001, 0.005, 0.01, 0.02, 0.05)
PHOTONS = (30, 300, 3000)
QUANTIZED = (0.0, 0.001, 0.005, 0.02)
CROP = 256
TYPES = ("white", "poisson", "8-bit", "jpeg")


def scenes():
    from skimage import data

    for name in IMAGES:
        image = getattr(data, name)().astype(np.float64) / 255
        h, w = image.shape[:2]
        top, left = max(0, (h - CROP) // 2), max(0, (w - CROP) // 2)
        image = image[top : top + CROP, left : left + CROP]
        for spec in KERNELS:
            kernel = load_kernel(spec, normalize=True).array
            if image.ndim == 3:
                kernel = kernel[..., None]
            yield f"{name} {spec}", ndimage.convolve(image, kernel, mode="reflect")


def jpeg(image8: np.ndarray, quality: int) -> tuple[np.ndarray, object]:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image8).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer), dtype=np.float64) / 255
    buffer.seek(0)
    return decoded, jpeg_tables_from_file(buffer)


def cases():
    """``(noise type, its setting, image and kernel, data, clean, true gain)``."""
    for name, clean in scenes():
        rng = np.random.default_rng(0)
        for sigma in WHITE:
            noisy = clean + rng.normal(0, sigma, clean.shape)
            yield "white", f"σ={sigma}", name, noisy, clean, 0
        for photons in PHOTONS:
            counts = rng.poisson(np.clip(clean, 0, None) * photons) / photons
            noisy = counts + rng.normal(0, 0.002, clean.shape)
            yield "poisson", f"N={photons}", name, noisy, clean, 1 / photons
        for sigma in QUANTIZED:
            noisy = np.round(np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 1) * 255) / 255
            yield "8-bit", f"σ={sigma}", name, noisy, clean, 0
        for sigma in (0.0, 0.01):
            image8 = np.round(np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 1) * 255)
            for quality in (75, 90):
                decoded, tables = jpeg(image8.astype(np.uint8), quality)
                setting = f"q={quality} σ={sigma}"
                yield "jpeg tables", setting, name, (decoded, tables), clean, 0
                yield "jpeg pixels", setting, name, (decoded, None), clean, 0


def main(selected: list[str]) -> None:
    rows = defaultdict(list)  # (noise, setting) -> [(case, error, MAD error, gain error)]
    kinds = defaultdict(lambda: defaultdict(int))
    for noise, setting, case, data, clean, gain in cases():
        if selected and not any(noise.startswith(s) for s in selected):
            continue
        data, tables = data if isinstance(data, tuple) else (data, None)
        truth = float(np.std(data - clean))
        found = estimate_noise(data, jpeg_tables=tables)
        mad = estimate_noise_sigma(data)
        gain_error = found.gain / gain - 1 if gain else np.nan
        rows[noise, setting].append((case, found.sigma / truth - 1, mad / truth - 1, gain_error))
        kinds[noise][found.kind] += 1
    print("relative error of σ̂ against std(data - clean): worst and mean |e| per setting")
    print(f"{'noise':<12} {'setting':<13} {'n':>3} {'worst':>7} {'mean':>6} {'MAD worst':>9} "
          f"{'MAD mean':>8} {'gain worst':>10}  worst case")  # fmt: skip
    for (noise, setting), found in rows.items():
        ours, mad, gain = (np.array([r[i] for r in found]) for i in (1, 2, 3))
        worst = int(np.argmax(np.abs(ours)))
        gain_worst = gain[np.argmax(np.abs(np.nan_to_num(gain)))]
        gain_text = f"{gain_worst:+.3f}" if np.isfinite(gain_worst) else "-"  # no gain to find
        print(
            f"{noise:<12} {setting:<13} {len(found):>3} {ours[worst]:>+7.3f} "
            f"{np.mean(np.abs(ours)):>6.3f} {mad[np.argmax(np.abs(mad))]:>+9.3f} "
            f"{np.mean(np.abs(mad)):>8.3f} {gain_text:>10}  {found[worst][0]}"
        )
    for noise, counts in kinds.items():
        print(f"kinds, {noise}: " + ", ".join(f"{k} ×{n}" for k, n in sorted(counts.items())))


if __name__ == "__main__":
    main([a for a in sys.argv[1:] if a in TYPES])  # run_all passes benchmark names
