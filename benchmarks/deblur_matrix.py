"""The development matrix of the default deblur: seeded cases, scores, tuned peers.

Import it from a script in this folder (``import deblur_matrix``) or after
``sys.path.insert(0, "benchmarks")``. The API is stable:

- ``cases(size="quick" | "full") -> list[Case]``: the cases, in a fixed order.
- ``score(restored, case) -> {"psnr", "ssim"}``: against the case's truth, on the
  [0, 1] scale (``data_range=1``), unclipped, colour SSIM over the channel axis.
- ``peers(case) -> {"richardson_lucy": {...}, "wiener": {...}}``: scikit-image's
  methods tuned on the truth, each ``{"psnr", "ssim", <its parameter>}``, cached.
- ``restore(case, method="auto", options=None) -> RestoreResult``: a registered
  method on the case, as ``deconv invert`` runs it (``--boundary`` as the case needs);
  ``problem(case)`` is the inverse problem it solves.

How the cases are drawn
-----------------------
Strata: 12 images (scikit-image's shipped ``camera astronaut coins text page brick
grass gravel cell microaneurysms immunohistochemistry rocket``; every one loads
offline) × 4 kernel families × 5 noise types × 2 boundaries = 480 combinations. The
``full`` set (120 cases) and the ``quick`` set (24) are each a quota sample of them:
the combinations in a seeded random order (``numpy.random.default_rng``, seed 14 for
full, 1414 for quick), a combination kept while none of its image, family, noise type
or boundary has reached its share (``n/12, n/4, n/5, n/2``, rounded up). So every image
appears 10 times in full (2 in quick), every family 30 times (6), every noise type 24
(4 or 5), each boundary 60 (12); should the pass fall short, another pass allows one
more per value.

Within a stratum the parameters cycle through their list in order of appearance
(every value is used), with seeded draws for angles, shake seeds and crop positions:

- kernels: ``gaussian`` σ 1, 1.5, 2, 2.5, 3; ``disk`` r 2, 3, 4, 5; ``motion`` length
  9, 13, 17, 21, 25 at a random whole angle in [0, 180); ``shake`` size 13, 17, 21, 27
  (Boracchi & Foi trajectories, ``deconv kernels``) with a random seed;
- noise types: ``gaussian`` σ 0.001, 0.005, 0.01, 0.02, 0.05; ``poisson`` peak 100,
  300, 1000, 3000 photons for a value of 1; ``8bit`` (``quantize:bits=8``); ``jpeg90``
  and ``jpeg75`` (``jpeg:quality=Q``: the noiseless blur stored as an 8-bit JPEG);
- crop side: 192, 256, 320, 384, 512 in full, 192 and 256 in quick (capped by the
  image: ``text``, ``page`` and ``microaneurysms`` are smaller than 192 and are used
  whole, less the margin an unknown-boundary case needs), at a random position;
- colour images (astronaut, immunohistochemistry, rocket) stay colour (H×W×3),
  the others are grey; pixels on the [0, 1] scale (uint8 / 255).

Boundaries: ``reflect``: the crop blurred with the reflect boundary (``deconv
convolve``'s default), so the data follows the model exactly. ``unknown``: the whole
image blurred, then the crop kept (at least the kernel's size from the image's edge):
the data has a real boundary, and is inverted with ``--boundary unknown``. The noise
is drawn on the observed crop, seeded per case.

Peers (tuned on the truth)
--------------------------
``skimage.restoration.richardson_lucy`` with ``num_iter`` in 5, 7, 10, 14, 20, 28, 40,
56, 80, 100, and ``skimage.restoration.wiener`` with ``balance`` on 13 log-spaced values
from 1e-4 to 1 (both with their defaults otherwise), per channel for colour, on the
observed data (their own boundary handling: RL pads with zeros, Wiener is circular);
for each the value with the best PSNR is kept. Results are cached in
``bench-out/deblur-peers/`` (one JSON per case, keyed by the data, kernel, grids and
the scikit-image version).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deconv_cli.kernels import load_kernel
from deconv_cli.noise import parse_noise
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.restore import RestoreOptions, RestoreResult

IMAGES = (
    "camera",
    "astronaut",
    "coins",
    "text",
    "page",
    "brick",
    "grass",
    "gravel",
    "cell",
    "microaneurysms",
    "immunohistochemistry",
    "rocket",
)
COLOUR = ("astronaut", "immunohistochemistry", "rocket")
FAMILIES = ("gaussian", "disk", "motion", "shake")
NOISE_TYPES = ("gaussian", "poisson", "8bit", "jpeg90", "jpeg75")
BOUNDARIES = ("reflect", "unknown")

KERNEL_VALUES = {
    "gaussian": (1, 1.5, 2, 2.5, 3),
    "disk": (2, 3, 4, 5),
    "motion": (9, 13, 17, 21, 25),
    "shake": (13, 17, 21, 27),
}
NOISE_VALUES = {
    "gaussian": (0.001, 0.005, 0.01, 0.02, 0.05),
    "poisson": (100, 300, 1000, 3000),
    "8bit": (8,),
    "jpeg90": (90,),
    "jpeg75": (75,),
}
SIZES = {"full": (120, 14, (192, 256, 320, 384, 512)), "quick": (24, 1414, (192, 256))}

RL_ITERATIONS = (5, 7, 10, 14, 20, 28, 40, 56, 80, 100)
WIENER_BALANCES = tuple(float(b) for b in np.logspace(-4, 0, 13))
CACHE = Path(__file__).resolve().parent.parent / "bench-out" / "deblur-peers"


@dataclass(frozen=True)
class Case:
    """One development case: a recipe whose data is built on first use (and kept for the
    last few cases only, so a whole matrix does not sit in memory).

    Attributes
    ----------
    name : str
        ``image-HxW-kernel-noise-boundary``, unique in its set.
    image, family, noise_type : str
        The strata (``noise_type`` one of :data:`NOISE_TYPES`).
    kernel_spec : str
        A ``deconv`` kernel spec (canonical); :attr:`kernel` is its array.
    noise : str
        A ``deconv convolve --noise`` spec.
    boundary : str
        ``reflect`` or ``unknown`` (the ``deconv invert --boundary`` to use).
    shape : (int, int)
        The crop's height and width.
    seed : int
        Seeds the crop position and the noise.
    truth, blurred : ndarray
        The sharp crop and the observed data (float64, same shape, H×W or H×W×3).
    noise_sigma : float or None
        The std of the noise by its model (``None`` for JPEG, which has none).
    noise_rms : float
        The measured RMS of the data minus its noiseless blur.
    """

    name: str
    image: str
    family: str
    noise_type: str
    kernel_spec: str
    noise: str
    boundary: str
    shape: tuple[int, int]
    seed: int

    @property
    def kernel(self) -> np.ndarray:
        return load_kernel(self.kernel_spec).array

    @property
    def truth(self) -> np.ndarray:
        return _build(self)[0]

    @property
    def blurred(self) -> np.ndarray:
        return _build(self)[1]

    @property
    def noise_sigma(self) -> float | None:
        return _build(self)[2]

    @property
    def noise_rms(self) -> float:
        return _build(self)[3]


def cases(size: str = "quick") -> list[Case]:
    """The ``quick`` (24) or ``full`` (120) cases, drawn as the module notes say."""
    if size not in SIZES:
        raise ValueError(f"size `{size}` is not one of {', '.join(SIZES)}")
    count, seed, sides = SIZES[size]
    rng = np.random.default_rng(seed)
    strata = [
        (i, f, n, b)
        for i in range(len(IMAGES))
        for f in range(len(FAMILIES))
        for n in range(len(NOISE_TYPES))
        for b in range(len(BOUNDARIES))
    ]
    quotas = [math.ceil(count / len(axis)) for axis in (IMAGES, FAMILIES, NOISE_TYPES, BOUNDARIES)]
    used: list[dict] = [{} for _ in quotas]
    chosen: list[tuple] = []
    order = rng.permutation(len(strata))
    for slack in range(len(strata)):  # a second pass, with one more allowed, if one falls short
        for index in order:
            combo = strata[index]
            if len(chosen) < count and combo not in chosen:
                if all(used[a].get(v, 0) < quotas[a] + slack for a, v in enumerate(combo)):
                    chosen.append(combo)
                    for a, v in enumerate(combo):
                        used[a][v] = used[a].get(v, 0) + 1
        if len(chosen) == count:
            break
    seen: dict[str, int] = {}
    out = []
    for k, (i, f, n, b) in enumerate(chosen):
        image, family, noise_type = IMAGES[i], FAMILIES[f], NOISE_TYPES[n]
        spec = _kernel_spec(family, _cycle(seen, "k" + family, KERNEL_VALUES[family]), rng)
        noise = _noise_spec(noise_type, _cycle(seen, "n" + noise_type, NOISE_VALUES[noise_type]))
        side = _cycle(seen, "side", sides)
        margin = max(load_kernel(spec).array.shape) if BOUNDARIES[b] == "unknown" else 0
        shape = tuple(min(side, n - 2 * margin) for n in _source(image).shape[:2])
        name = f"{image}-{shape[0]}x{shape[1]}-{spec}-{noise}-{BOUNDARIES[b]}"
        out.append(
            Case(
                name, image, family, noise_type, spec, noise, BOUNDARIES[b], shape, seed * 1000 + k
            )
        )
    return out


def _cycle(seen: dict, key: str, values: tuple):
    seen[key] = seen.get(key, -1) + 1
    return values[seen[key] % len(values)]


def _kernel_spec(family: str, value, rng: np.random.Generator) -> str:
    if family == "gaussian":
        spec = f"gaussian:sigma={value}"
    elif family == "disk":
        spec = f"disk:radius={value}"
    elif family == "motion":
        spec = f"motion:length={value},angle={int(rng.integers(0, 180))}"
    else:
        spec = f"shake:size={value},seed={int(rng.integers(0, 10_000))}"
    return load_kernel(spec).description


def _noise_spec(noise_type: str, value) -> str:
    if noise_type == "gaussian":
        return f"gaussian:sigma={value}"
    if noise_type == "poisson":
        return f"poisson:peak={value}"
    if noise_type == "8bit":
        return f"quantize:bits={value}"
    return f"jpeg:quality={value}"


@functools.cache
def _source(image: str) -> np.ndarray:
    from skimage import data

    return getattr(data, image)().astype(np.float64) / 255


@functools.lru_cache(maxsize=4)
def _build(case: Case) -> tuple[np.ndarray, np.ndarray, float | None, float]:
    """(truth, blurred, noise std by model, measured noise RMS) of ``case``."""
    source = _source(case.image)
    kernel = case.kernel
    rng = np.random.default_rng(case.seed)
    margin = max(kernel.shape) if case.boundary == "unknown" else 0
    h, w = case.shape
    top = int(rng.integers(margin, source.shape[0] - margin - h + 1))
    left = int(rng.integers(margin, source.shape[1] - margin - w + 1))
    frame = (slice(top, top + h), slice(left, left + w))
    reflect = Geometry.create(boundary="reflect")
    if case.boundary == "unknown":
        clean = ConvOperator(kernel, source.shape, reflect).forward(source)[frame]
    else:
        clean = ConvOperator(kernel, source[frame].shape, reflect).forward(source[frame])
    noise = parse_noise(case.noise)
    blurred = noise.apply(clean, rng)
    truth = np.ascontiguousarray(source[frame])
    rms = float(np.sqrt(np.mean(np.square(blurred - clean))))
    return truth, blurred, noise.sigma(clean), rms


def score(restored: np.ndarray, case: Case) -> dict[str, float]:
    """PSNR (dB) and SSIM of ``restored`` against ``case.truth`` (``data_range=1``)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    truth = case.truth
    restored = np.asarray(restored, dtype=np.float64).reshape(truth.shape)
    axis = -1 if truth.ndim == 3 else None
    return {
        "psnr": float(peak_signal_noise_ratio(truth, restored, data_range=1.0)),
        "ssim": float(structural_similarity(truth, restored, data_range=1.0, channel_axis=axis)),
    }


def problem(case: Case):
    """The inverse problem ``deconv invert`` builds for ``case`` (reflect geometry,
    ``--boundary unknown`` where the case needs it); ``.crop(x)`` is the observed frame."""
    from deconv_cli.inversion import build_problem

    return build_problem(
        case.kernel,
        case.blurred.shape,
        Geometry.create(boundary="reflect"),
        unknown_boundary=case.boundary == "unknown",
    )


def restore(
    case: Case, method: str = "auto", options: RestoreOptions | None = None
) -> RestoreResult:
    """Run a registered method on ``case.blurred`` as ``deconv invert`` does; the
    result's image is the observed frame."""
    from deconv_cli.inversion import invert

    return invert(case.blurred, problem(case), method, options or RestoreOptions())


def _per_channel(function, y: np.ndarray) -> np.ndarray:
    if y.ndim == 2:
        return function(y)
    return np.stack([function(y[..., c]) for c in range(y.shape[-1])], axis=-1)


def peers(case: Case) -> dict[str, dict[str, float]]:
    """scikit-image's richardson_lucy and wiener, each at its best PSNR over its grid."""
    import skimage

    y, kernel = case.blurred, case.kernel
    key = hashlib.sha256()
    for part in (y, kernel, np.array(RL_ITERATIONS), np.array(WIENER_BALANCES)):
        key.update(np.ascontiguousarray(part).tobytes())
    key.update(skimage.__version__.encode())
    path = CACHE / f"{case.name.replace(':', '_').replace(',', '_')}-{key.hexdigest()[:16]}.json"
    if path.exists():
        return json.loads(path.read_text())
    from skimage.restoration import richardson_lucy, wiener

    def best(run, grid, name):
        results = [(score(_per_channel(lambda c, v=v: run(c, v), y), case), v) for v in grid]
        top, value = max(results, key=lambda r: r[0]["psnr"])
        return {**top, name: value}

    found = {
        "richardson_lucy": best(
            lambda c, n: richardson_lucy(c, kernel, num_iter=n), RL_ITERATIONS, "num_iter"
        ),
        "wiener": best(lambda c, b: wiener(c, kernel, balance=b), WIENER_BALANCES, "balance"),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(found))
    tmp.replace(path)
    return found
