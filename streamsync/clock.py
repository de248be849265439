"""The one monotonic clock of leases and their readers: the event loop's.

Lease expiry is decided by comparing this clock with the sleeps and timeouts that renew leases;
both must run on the same clock. The loop's is also the one a test can fast-forward (the unit
tests of the coordinator and the readers run on a fake one), which `time.monotonic` is not.
"""

from __future__ import annotations

import asyncio


def monotonic() -> float:
    return asyncio.get_running_loop().time()
