"""Hot reload: watch the config and schema folders, rebuild the route table, swap it whole.

A reload either installs a complete new route table in one assignment or keeps the running
one and says why in the `lint` format; it never leaves the daemon half-configured and
never raises out of `Reloader.run()`.

Wiring (daemon side)::

    holder = TableHolder(load(config_path))       # a broken config at start is fatal
    reloader = Reloader(config_path, holder, metrics, before_swap=declare_topology)
    await task_group.start(reloader.run)          # returns once the folders are watched
    ...
    reloader.request_reload("SIGHUP")             # from the signal handler
    ...
    table = holder.table                          # once per send request, then only `table`

A `listener` (the systemd notifier) is told when each reload starts and how it ended.
Results are counted in `routerd_reloads_total{result=accepted|refused|unchanged}`;
`before_swap(new_table)` runs before the swap (declare new targets there) and a raise
refuses the reload. Anything under `source` in routes.yaml needs a restart: a reload that
changes it is refused with one `[restart-required]` problem per changed setting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from watchfiles import DefaultFilter, awatch

from routerd.config.loader import load as load_route_table
from routerd.config.model import ConfigError, Location, Problem, RouteTable
from routerd.observe import TableMetrics

log = logging.getLogger(__name__)

BeforeSwap = Callable[[RouteTable], Awaitable[None]]
Loader = Callable[[Path], RouteTable]


class ReloadListener(Protocol):
    """Told around every reload (systemd's RELOADING=1 ... READY=1, for one)."""

    def reload_started(self, reason: str) -> None: ...

    def reload_finished(self, result: str, table_hash: str) -> None:
        """`result`: accepted, refused or unchanged, as in routerd_reloads_total."""


# The watcher groups file events that arrive less than STEP_MS apart (an editor's save is
# several); the reloader then waits `debounce` seconds of quiet on top, but never longer
# than MAX_DELAY after the first event, so a folder that never settles still reloads.
STEP_MS = 50
MAX_DELAY = 5.0
WATCH_RETRY_MAX = 30.0


class TableHolder:
    """The running route table. Handlers read `.table` once per send request and keep that
    object to the end, so a reload never changes the table under a request in flight."""

    __slots__ = ("generation", "table")

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        self.generation = 1

    def swap(self, table: RouteTable) -> int:
        """Install `table` as the running route table; returns its generation."""
        self.generation += 1
        self.table = table
        return self.generation


def watch_dirs(config_path: Path, files: Iterable[Path]) -> tuple[Path, ...]:
    """The folders to watch for a route table built from `config_path` and `files`.

    Folders, never single files: an editor that saves by write-temp-and-rename gives the
    file a new inode, which a watch on the old inode would never report.
    """
    dirs = {_volume_dir(Path(config_path).parent)}
    dirs.update(_volume_dir(Path(f).parent) for f in files)
    return tuple(sorted(dirs))


def _volume_dir(folder: Path) -> Path:
    # A Kubernetes ConfigMap volume exposes each file as a symlink through `..data` into a
    # `..<timestamp>` folder; an update writes a new such folder, renames `..data_tmp` over
    # `..data` and deletes the old one. A path that went through those (the loader may
    # have resolved symlinks) is watched at the volume's top folder, where the swap shows.
    # abspath, not resolve: resolving would lead right back into the doomed folder.
    folder = Path(os.path.abspath(folder))
    while folder.name.startswith("..") and folder.parent != folder:
        folder = folder.parent
    return folder


def _nearest_existing(folder: Path) -> Path:
    # A folder that does not exist yet cannot be watched; its parent shows it appearing.
    while not folder.is_dir() and folder.parent != folder:
        folder = folder.parent
    return folder


def _fingerprint(dirs: Iterable[Path]) -> tuple[tuple[str, int], ...]:
    """Which folder objects are watched: a folder deleted or replaced needs a new watch."""
    out = []
    for d in dirs:
        try:
            out.append((str(d), os.stat(d).st_ino))
        except OSError:
            out.append((str(d), -1))
    return tuple(out)


# While a reload loads in its worker thread, the GIL is handed over every 0.5 ms instead
# of Python's default 5 ms.
RELOAD_SWITCH_INTERVAL = 0.0005


@contextlib.contextmanager
def _loop_first() -> Iterator[None]:
    """Let the event loop take the GIL back sooner while a worker thread loads a config.

    The loader is CPU-bound Python; the event loop gives the GIL up at every socket call and
    then waits for the loader's turn to end before it can go on (the convoy effect). With
    the default 5 ms turns a 200-schema reload under load held requests up to 0.6 s
    (`scripts/bench_latency.py --reload`).
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, RELOAD_SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@contextlib.contextmanager
def _collections_paused() -> Iterator[None]:
    """No automatic garbage collection while a worker thread loads a config.

    Loading builds some 10^5 long-lived objects, and each burst of them set off a full
    collection, which holds the GIL (and so the event loop) for 20-35 ms: 13 of them in one
    200-schema reload under load (counted with `gc.callbacks`). Refcounting still frees
    almost everything meanwhile; the collector runs again once the load is done.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def restart_needed(running: RouteTable, new: RouteTable) -> tuple[Problem, ...]:
    """Settings of `new` that differ from `running` but only take effect at start.

    The source queues' names, types, arguments, prefetch and what each accepts are fixed
    when the daemon starts consuming; applying them silently later would leave the daemon
    consuming something other than what its config says.
    """
    if running.sources == new.sources:
        return tuple(_windows_shrunk(running, new))
    if len(running.sources) != len(new.sources):
        return (_sources_changed(running, new),)
    problems = []
    for i, (old_source, new_source) in enumerate(zip(running.sources, new.sources, strict=True)):
        if old_source == new_source:
            continue
        old_path, new_path = _source_path(running, i), _source_path(new, i)
        old_raw: dict[str, Any] = dict(_raw_at(running.raw, old_path) or {})
        new_raw: dict[str, Any] = dict(_raw_at(new.raw, new_path) or {})
        changed: list[tuple[str, Any, Any]] = [
            (key, old_raw.get(key), new_raw.get(key))
            for key in sorted(old_raw.keys() | new_raw.keys())
            if old_raw.get(key) != new_raw.get(key)
        ]
        if not changed:
            changed = [
                (f.name, getattr(old_source, f.name), getattr(new_source, f.name))
                for f in dataclasses.fields(new_source)
                if f.compare and getattr(old_source, f.name) != getattr(new_source, f.name)
            ]
        label = "source" if len(new_path) == 1 else f"sources[{i}]"
        for key, old, value in changed:
            where = new.positions.get((*new_path, key)) or new.positions.get(new_path)
            problems.append(
                Problem(
                    where or Location(new.path),
                    "error",
                    f"{label}.{key} changed from {old!r} to {value!r}; source settings only "
                    "take effect at start: restart routerd to apply them",
                    "restart-required",
                )
            )
    return tuple(problems)


def _windows_shrunk(running: RouteTable, new: RouteTable) -> list[Problem]:
    """A new body limit that lowers a source's window: consumers keep the window they
    started with, so the bigger bodies could overrun the source's max_in_flight_bytes.
    A window that grows is no risk; it applies at the next start or reconnect."""
    problems = []
    for i, source in enumerate(new.sources):
        before, after = source.window(running.limits), source.window(new.limits)
        if after >= before:
            continue
        where = new.positions.get(("limits", "max_body_bytes")) or Location(new.path)
        label = "source" if len(_source_path(new, i)) == 1 else f"sources[{i}]"
        problems.append(
            Problem(
                where,
                "error",
                f"limits.max_body_bytes {new.limits.max_body_bytes} lowers {label} "
                f"({source.queue!r}) from {before} to {after} deliveries in flight "
                f"(max_in_flight_bytes {source.max_in_flight_bytes} / body limit); the "
                "running consumers keep their window until restarted, so bigger bodies "
                "could overrun the budget: restart routerd to apply it",
                "restart-required",
            )
        )
    return problems


def _source_path(table: RouteTable, index: int) -> tuple[str | int, ...]:
    return ("sources", index) if "sources" in table.raw else ("source",)


def _raw_at(raw: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        raw = raw[key]
    return raw


def _sources_changed(running: RouteTable, new: RouteTable) -> Problem:
    def shown(table: RouteTable) -> str:
        return ", ".join(source.queue for source in table.sources)

    where = new.positions.get(("sources",)) or new.positions.get(("source",))
    return Problem(
        where or Location(new.path),
        "error",
        f"the sources changed from [{shown(running)}] to [{shown(new)}]; sources only "
        "take effect at start: restart routerd to apply them",
        "restart-required",
    )


class Reloader:
    """Rebuilds the route table when its files change or on request, and swaps it in."""

    def __init__(
        self,
        config_path: Path,
        holder: TableHolder,
        metrics: TableMetrics,
        *,
        before_swap: BeforeSwap | None = None,
        debounce: float = 0.3,
        load: Loader | None = None,
        listener: ReloadListener | None = None,
    ) -> None:
        # abspath keeps symlinks as given: a ConfigMap's routes.yaml must be read through
        # `..data` each time, never through the folder it pointed to at start.
        self.config_path = Path(os.path.abspath(config_path))
        self.holder = holder
        self.metrics = metrics
        self.before_swap = before_swap
        self.debounce = debounce
        self._load = load if load is not None else load_route_table
        self.listener = listener
        self._reasons: list[str] = []
        self._wake: anyio.Event | None = None
        self._lock: anyio.Lock | None = None
        self._stop_watch: anyio.Event | None = None
        self._watching: tuple[Path, ...] = ()
        metrics.observe_table(holder.table, holder.generation)

    def request_reload(self, reason: str) -> None:
        """Ask for a reload soon (debounced); safe to call from a signal handler task."""
        self._reasons.append(reason)
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch and reload until cancelled; `started` once the folders are watched."""
        self._wake = anyio.Event()
        if self._reasons:
            self._wake.set()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._reload_loop)
            await tg.start(self._watch_loop)
            task_status.started()

    async def reload(self, reason: str = "requested") -> bool:
        """Load the files and swap in the new route table if it is good.

        Returns False when the reload was refused (the running table stays), True when the
        new table runs now or the files still describe the running one.
        """
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self.listener is None:
                return await self._reload(reason)
            generation = self.holder.generation
            self.listener.reload_started(reason)
            try:
                accepted = await self._reload(reason)
            except BaseException:
                # Cancelled (the daemon stops): the listener must not stay "reloading".
                self.listener.reload_finished("interrupted", self.holder.table.content_hash)
                raise
            if not accepted:
                result = "refused"
            elif self.holder.generation != generation:
                result = "accepted"
            else:
                result = "unchanged"
            self.listener.reload_finished(result, self.holder.table.content_hash)
            return accepted

    async def _reload(self, reason: str) -> bool:
        running = self.holder.table
        try:
            # A worker thread: compiling big schemas must not stall routing on the loop.
            with _loop_first(), _collections_paused():
                new = await anyio.to_thread.run_sync(
                    self._load, self.config_path, abandon_on_cancel=True
                )
        except ConfigError as exc:
            return self._refuse(reason, exc.problems)
        except Exception as exc:
            log.debug("loader failed", exc_info=True)
            problem = Problem(
                Location(self.config_path),
                "error",
                f"cannot load the route table: {exc!r}",
                "load-failed",
            )
            return self._refuse(reason, (problem,))
        if new.content_hash == running.content_hash:
            self.metrics.reloads.labels(result="unchanged").inc()
            log.debug("route table unchanged", extra={"reason": reason, "hash": new.content_hash})
            return True
        if problems := restart_needed(running, new):
            return self._refuse(reason, problems)
        if self.before_swap is not None:
            try:
                await self.before_swap(new)
            except Exception as exc:
                problem = Problem(
                    Location(new.path),
                    "error",
                    f"the new route table could not be prepared on the broker: {exc!r}",
                    "prepare-failed",
                )
                return self._refuse(reason, (problem,))
        generation = self.holder.swap(new)
        log_warnings(new)
        self.metrics.observe_table(new, generation)
        self.metrics.reloads.labels(result="accepted").inc()
        log.info(
            "route table reloaded",
            extra={
                "rules": len(new.rules),
                "schemas": len(new.schemas),
                "hash": new.content_hash,
                "generation": generation,
                "reason": reason,
            },
        )
        if watch_dirs(self.config_path, new.files) != self._watching and self._stop_watch:
            self._stop_watch.set()
        return True

    def _refuse(self, reason: str, problems: tuple[Problem, ...]) -> bool:
        for problem in problems:
            level = logging.WARNING if problem.severity == "warning" else logging.ERROR
            log.log(level, "%s", problem)
        self.metrics.reloads.labels(result="refused").inc()
        self.metrics.reload_problems.inc(len(problems))
        log.error(
            "reload refused, the running route table stays",
            extra={
                "problems": len(problems),
                "hash": self.holder.table.content_hash,
                "generation": self.holder.generation,
                "reason": reason,
            },
        )
        return False

    async def _reload_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            # Debounce: wait for `debounce` seconds without a new request, so an editor's
            # burst of writes or a ConfigMap swap in several steps is loaded once, whole.
            deadline = anyio.current_time() + MAX_DELAY
            while True:
                self._wake = anyio.Event()
                quiet = min(self.debounce, max(0.0, deadline - anyio.current_time()))
                with anyio.move_on_after(quiet) as scope:
                    await self._wake.wait()
                if scope.cancelled_caught or anyio.current_time() >= deadline:
                    break
            reasons, self._reasons = self._reasons, []
            await self.reload(_summarize(reasons))

    async def _watch_loop(self, *, task_status: TaskStatus[None]) -> None:
        failures = 0
        while True:
            self._watching = watch_dirs(self.config_path, self.holder.table.files)
            targets = tuple(sorted({_nearest_existing(d) for d in self._watching}))
            self._stop_watch = stop = anyio.Event()
            errors: list[Exception] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, targets, stop, failures >= 2, errors)
                # The watcher registers its inotify watches in its first step, before its
                # first await; one checkpoint lets that step run before we say "started".
                await anyio.lowlevel.checkpoint()
                task_status.started()
                try:
                    await stop.wait()
                finally:
                    # On cancellation too: the watcher's thread only notices `stop`, and
                    # would otherwise hold shutdown up until its own timeout.
                    stop.set()
            if errors:
                failures += 1
                delay = min(WATCH_RETRY_MAX, 0.5 * 2**failures)
                log.warning(
                    "cannot watch the config folders; retrying (SIGHUP still reloads)",
                    extra={
                        "dirs": ",".join(map(str, targets)),
                        "error": repr(errors[0]),
                        "retry_in": delay,
                    },
                )
                await anyio.sleep(delay)
            else:
                failures = 0
            # Changes made while no watch was in place would otherwise wait for the next
            # event; a reload that finds the same files only counts as unchanged.
            self.request_reload("watched folders changed")
            task_status = anyio.TASK_STATUS_IGNORED

    async def _watch(
        self, targets: tuple[Path, ...], stop: anyio.Event, polling: bool, errors: list[Exception]
    ) -> None:
        fingerprint = _fingerprint(targets)
        try:
            async for changes in awatch(
                *targets,
                watch_filter=DefaultFilter(),
                step=STEP_MS,
                stop_event=stop,
                recursive=False,
                force_polling=polling or None,
            ):
                names = sorted({Path(path).name for _, path in changes})
                log.debug("config folder changed", extra={"files": ",".join(names)})
                self.request_reload("file change: " + ", ".join(names[:5]))
                if _fingerprint(targets) != fingerprint or any(
                    _nearest_existing(d) not in targets for d in self._watching
                ):
                    # A watched folder was deleted, replaced or (re)created: watch anew.
                    stop.set()
        except Exception as exc:
            errors.append(exc)
        finally:
            stop.set()


def _summarize(reasons: list[str]) -> str:
    unique = list(dict.fromkeys(reasons)) or ["requested"]
    text = "; ".join(unique[:3])
    return text if len(unique) <= 3 else f"{text}; +{len(unique) - 3} more"


def log_warnings(table: RouteTable) -> None:
    """What `lint` warns about in an accepted table: logged once, when it goes live."""
    for problem in table.warnings:
        log.warning("%s", problem, extra={"code": problem.code, "hash": table.content_hash})
