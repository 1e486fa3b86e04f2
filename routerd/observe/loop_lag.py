"""How late the event loop runs: time during which routerd could not route.

Everything routerd does for a request runs on one event loop, so anything that holds it
(CPU-bound work in the same process: a reload's load, a full garbage collection, the
machine's other tenants) delays every request in flight by as much. A timer that should
fire every LAG_INTERVAL seconds measures it: its lateness is observed into
`routerd_event_loop_lag_seconds`. A sustained lag means the replica is CPU-bound (add
replicas); a spike at a reload is the reload's stall (scripts/bench_latency.py --reload).
"""

from __future__ import annotations

import anyio
from prometheus_client import Histogram

# 20 wakeups a second: negligible work, fine enough to see a 50 ms stall.
LAG_INTERVAL = 0.05

__all__ = ["LAG_BUCKETS", "LAG_INTERVAL", "watch_loop_lag"]

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


async def watch_loop_lag(lag: Histogram, interval: float = LAG_INTERVAL) -> None:
    """Observe the loop's lateness every `interval` seconds, until cancelled."""
    while True:
        due = anyio.current_time() + interval
        await anyio.sleep(interval)
        lag.observe(max(0.0, anyio.current_time() - due))
