"""Settings shared by every test directory.

Hypothesis: no per-example deadline. Its default (200 ms) is a timing assertion, and on a shared
2-core machine an example that is usually 12 ms took 289 ms once, which Hypothesis reports as a
flaky failure of a property test that held (test_store_binary.py, a full unit run beside other
jobs). Speed is measured by the benchmarks in bench/, not by timed tests.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("her2", deadline=None)
settings.load_profile("her2")
