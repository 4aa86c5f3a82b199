"""Hypothesis profiles for the parser fuzzing harness.

`ci` (the default, part of `make test`): derandomized, a bounded number of examples per
property, about 20-40 s for the whole directory on a 2-core machine.
`long` (`make fuzz`): random seeds and many more examples per property.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "long", max_examples=5_000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
