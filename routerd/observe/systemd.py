"""systemd's notification protocol (sd_notify), spoken by routerd itself.

Under a `Type=notify` unit systemd passes the path of a Unix datagram socket in
$NOTIFY_SOCKET ('@' at the start: an abstract socket) and, with `WatchdogSec=`, the
watchdog period in $WATCHDOG_USEC (for the process $WATCHDOG_PID, when set). Each datagram
is newline-separated KEY=value lines: READY=1, RELOADING=1 (with MONOTONIC_USEC=),
STOPPING=1, STATUS=..., WATCHDOG=1. One datagram is a few lines, so no library is needed.

Outside systemd (no $NOTIFY_SOCKET) every send does nothing: the same binary runs under
Kubernetes, Docker or a shell.

Wiring (daemon side)::

    systemd = SystemdLink(Notifier.from_environ(os.environ), health, holder, source_queue)
    await task_group.start(systemd.run)      # READY=1 once consuming, STATUS=, WATCHDOG=1
    reloader = Reloader(..., listener=systemd)   # RELOADING=1 ... READY=1 around reloads
    systemd.stopping()                       # on SIGTERM: STOPPING=1

And the unit's ExecReload (see the end of this module): SIGHUP, then wait for the result.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Mapping

import anyio
from anyio.abc import TaskStatus
from prometheus_client.parser import text_string_to_metric_families

from routerd.observe.health import Health
from routerd.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# How often the link looks at the daemon's state to report changes (READY=1, STATUS=):
# readiness reaches systemd within this, and it costs one attribute read per tick.
TICK = 0.25


def notify_message(fields: Mapping[str, str]) -> bytes:
    """One sd_notify datagram: KEY=value lines in order.

    A newline inside a value would start a bogus assignment of its own, so values are
    kept to one line; keys are systemd's own upper-case names.
    """
    lines = []
    for key, value in fields.items():
        if not key or not key.replace("_", "").isalnum() or not key.isupper():
            raise ValueError(f"not an sd_notify key: {key!r}")
        lines.append(f"{key}={' '.join(str(value).splitlines())}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def socket_address(value: str) -> str | bytes | None:
    """Where $NOTIFY_SOCKET points: a path, or an abstract name ('@' means a leading NUL).

    None for anything else systemd would not hand out (empty, relative); sd_notify also
    accepts vsock: addresses, which only matter inside VMs, and are not supported here.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, as systemd recommends.

    None when the watchdog is off: the variable unset or not a positive integer, or
    $WATCHDOG_PID naming another process (the variables were inherited, not meant for us).
    """
    raw_pid = environ.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            if int(raw_pid) != pid:
                return None
        except ValueError:
            return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, what systemd expects in MONOTONIC_USEC=."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify datagrams to one address; never raises, since reporting to systemd
    must not stop routing (a failure is logged once)."""

    def __init__(self, address: str | bytes | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog if address is not None else None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> Notifier:
        pid = os.getpid() if pid is None else pid
        address = socket_address(environ.get("NOTIFY_SOCKET", ""))
        if environ.get("NOTIFY_SOCKET") and address is None:
            log.warning(
                "NOTIFY_SOCKET is neither a path nor an abstract socket; not notifying systemd",
                extra={"notify_socket": environ["NOTIFY_SOCKET"]},
            )
        return cls(address, watchdog_interval(environ, pid))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one datagram; True when it was delivered to the socket."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(notify_message(fields), self.address)
        except OSError as exc:
            if not self._warned or exc.errno not in (errno.EAGAIN, errno.ECONNREFUSED):
                log.warning(
                    "cannot notify systemd", extra={"error": repr(exc), "fields": ",".join(fields)}
                )
            self._warned = True
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class SystemdLink:
    """What systemd learns of the daemon: readiness, reloads, status, stop, liveness.

    The watchdog is pinged from the event loop that routes, so a wedged loop stops the
    pings; and only while the broker session is healthy (see `session_healthy`).
    """

    def __init__(
        self,
        notifier: Notifier,
        health: Health,
        table_hash: str,
        source_queue: str,
        *,
        stuck_after: float | None = None,
    ) -> None:
        self.notifier = notifier
        self.health = health
        self.table_hash = table_hash
        self.source_queue = source_queue
        self.last_reload = "none yet"
        self.ready_sent = False
        self.reloading = False
        self.stopped = False
        # A session connected but not consuming for this long is stuck (declaring or
        # opening channels never takes that long); default: the watchdog timeout itself.
        watchdog = notifier.watchdog
        self.stuck_after = stuck_after if stuck_after is not None else (watchdog or 0) * 2
        self._connected_since: float | None = None
        self._status = ""

    def state(self) -> str:
        if self.stopped:
            return "stopping: finishing in-flight send requests"
        if self.health.ready:
            return f"routing {self.source_queue}"
        if self.health.blocked:
            return "waiting: the broker blocks publishing (a memory or disk alarm)"
        if self.health.connected:
            return "connected, not consuming yet"
        return "connecting to the broker"

    def status(self) -> str:
        return (
            f"{self.state()}; route table {self.table_hash[:12]}; last reload: {self.last_reload}"
        )

    def session_healthy(self, now: float) -> bool:
        """Whether the broker session deserves a WATCHDOG=1 ping now.

        Consuming: yes. Not connected: yes, too; the link is reconnecting with backoff, and
        a restart would not bring the broker back sooner (the same reason /healthz stays
        200 while /readyz is 503). Connected without consuming for longer than
        `stuck_after`: no, a session that hangs there never routes again by itself.
        """
        if not self.health.connected:
            self._connected_since = None
            return True
        if self.health.consuming:
            self._connected_since = None
            return True
        if self._connected_since is None:
            self._connected_since = now
        return now - self._connected_since < self.stuck_after

    def report(self) -> None:
        """Send READY=1 the first time the daemon consumes, and STATUS= when it changes."""
        if self.reloading:
            return
        fields: dict[str, str] = {}
        if self.health.ready and not self.ready_sent and not self.stopped:
            fields["READY"] = "1"
            self.ready_sent = True
        status = self.status()
        if status != self._status:
            fields["STATUS"] = status
            self._status = status
        if fields:
            self.notifier.send(**fields)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Report state changes and ping the watchdog until cancelled."""
        task_status.started()
        if not self.notifier.enabled:
            return
        interval = self.notifier.watchdog
        next_ping = anyio.current_time()
        try:
            while True:
                self.report()
                now = anyio.current_time()
                if interval is not None and now >= next_ping:
                    if not self.stopped and self.session_healthy(now):
                        self.notifier.send(WATCHDOG="1")
                    next_ping = now + interval
                wait = TICK if interval is None else min(TICK, max(0.0, next_ping - now))
                await anyio.sleep(wait)
        finally:
            self.notifier.close()

    # The Reloader's listener: RELOADING=1 before a reload, READY=1 after it, whatever
    # its result (systemd leaves the "reloading" state only on READY=1).

    def reload_started(self, reason: str) -> None:
        status = f"reloading the route table ({reason})"
        if not self.ready_sent:
            # Still starting: systemd's reloading state is for a service that was ready.
            self.notifier.send(STATUS=status)
            return
        self.reloading = True
        self.notifier.send(RELOADING="1", MONOTONIC_USEC=str(monotonic_usec()), STATUS=status)

    def reload_finished(self, result: str, table_hash: str) -> None:
        self.reloading = False
        self.table_hash = table_hash
        self.last_reload = f"{result} at {time.strftime('%H:%M:%S')}"
        self._status = self.status()
        if self.ready_sent:
            self.notifier.send(READY="1", STATUS=self._status)
        else:
            self.notifier.send(STATUS=self._status)

    def stopping(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._status = self.status()
        self.notifier.send(STOPPING="1", STATUS=self._status)


# --- ExecReload: `systemctl reload` that fails when routerd refuses the reload ----------
#
# systemd before 253 has no Type=notify-reload, and none of its versions learns a reload's
# *result* from sd_notify: `systemctl reload` fails only when ExecReload= fails. So the
# unit's ExecReload runs `python -m routerd.observe.systemd reload $MAINPID`, which sends
# SIGHUP and waits for routerd_reloads_total on routerd's own /metrics to count it.

RELOAD_RESULTS = ("accepted", "refused", "unchanged")


def reload_counts(metrics_text: str) -> dict[str, float]:
    """routerd_reloads_total by result, from a /metrics exposition."""
    counts = dict.fromkeys(RELOAD_RESULTS, 0.0)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "routerd_reloads_total":
                counts[sample.labels["result"]] = sample.value
    return counts


def reload_outcome(before: Mapping[str, float], after: Mapping[str, float]) -> str | None:
    """The result of the reload that happened between two counts; None while none did.

    A refusal wins when a file-change reload happened to finish in between as well: the
    files on disk are then broken either way.
    """
    grown = [r for r in RELOAD_RESULTS if after.get(r, 0) > before.get(r, 0)]
    if not grown:
        return None
    return "refused" if "refused" in grown else grown[0]


def _get_metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text: str = answer.read().decode("utf-8")
    return text


def reload_and_wait(pid: int, metrics_url: str, timeout: float) -> tuple[int, str]:
    """SIGHUP routerd `pid` and wait for the reload's result: (exit code, message)."""
    try:
        before = reload_counts(_get_metrics(metrics_url))
    except OSError as exc:
        return 1, (
            f"cannot read {metrics_url} ({exc}): is routerd running with this "
            "ROUTERD_HTTP_ADDR? The reload was not requested."
        )
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            outcome = reload_outcome(before, reload_counts(_get_metrics(metrics_url)))
        except OSError:
            continue
        if outcome == "refused":
            return 1, (
                "routerd refused the reload and keeps the running route table; "
                "`journalctl -u routerd` shows why (or run `routerd lint`)"
            )
        if outcome is not None:
            return 0, f"route table reload: {outcome}"
    return 1, f"routerd did not report a reload within {timeout:.0f} s; see `journalctl -u routerd`"


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "reload" or not argv[1].isdigit():
        print("usage: python -m routerd.observe.systemd reload MAINPID", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_sources({}, os.environ)
    except SettingsError as exc:
        print(f"routerd reload: {exc}", file=sys.stderr)
        return 1
    host = settings.http_host
    # Listening on every interface includes loopback, the address to ask.
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    host = f"[{host}]" if ":" in host else host
    # routerd debounces 0.3 s, and a reload waits for a file change in progress (5 s at
    # most) and for the broker to declare the new table's queues.
    code, message = reload_and_wait(
        int(argv[1]), f"http://{host}:{settings.http_port}/metrics", timeout=60
    )
    print(message, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
