"""What /healthz and /readyz report: alive always, ready once routing can actually happen."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Health:
    """Readiness flags the daemon flips as it connects, consumes, loses the broker, stops.

    A replica that is not ready must not receive traffic from a load balancer, and an
    orchestrator should wait for it during a rollout; it stays alive (healthz) meanwhile
    because restarting it would not make the broker come back sooner.
    """

    connected: bool = False
    consuming: bool = False
    table_loaded: bool = False
    # The broker blocks publishing (connection.blocked: a memory or disk alarm); routing
    # waits for it, and the operator must learn why nothing moves.
    blocked: bool = False

    @property
    def ready(self) -> bool:
        return self.connected and self.consuming and self.table_loaded and not self.blocked

    def reasons(self) -> list[str]:
        """Why the process is not ready, one phrase per unmet condition; empty when ready."""
        reasons = []
        if not self.table_loaded:
            reasons.append("no route table loaded")
        if not self.connected:
            reasons.append("not connected to the broker")
        if not self.consuming:
            reasons.append("not consuming the source")
        if self.blocked:
            reasons.append("the broker blocks publishing (a memory or disk alarm)")
        return reasons
