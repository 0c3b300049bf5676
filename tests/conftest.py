"""Shared test settings: hypothesis profiles.

``HYPOTHESIS_PROFILE`` selects one (default ``ci``):

ci
    Derandomized (the same examples on every run), a bounded number of examples,
    no deadline (the machine is shared, timings are noisy), no example database.
    ``tests/test_fuzz.py`` gives each property its own small budget under it.
fuzz
    Random examples, many of them (``DECONV_FUZZ_EXAMPLES``, default 2000, per
    property), failures saved in ``.hypothesis/`` so a rerun replays them first.
    ``make fuzz`` runs ``HYPOTHESIS_PROFILE=fuzz pytest -m fuzz``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=50,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW_IS_FINE,
)
settings.register_profile(
    "fuzz",
    derandomize=False,
    max_examples=int(os.environ.get("DECONV_FUZZ_EXAMPLES", "2000")),
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_IS_FINE,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
