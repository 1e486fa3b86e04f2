"""`routerd send`: publish send requests to routerd's source, as a load generator.

Requests come from files (or stdin, `-`), one JSON document (an object, or an array of
objects) or JSON lines, or from `routerd.ops.generate` (`--generate N`). They are published
through `routerd.client.Publisher`, at most `max_in_flight` unconfirmed at a time, paced to
`rate` per second when asked. Without `check` every request is published and routerd
decides (invalid ones land in rejected, which is what a load test wants); with it, the
client's pre-check refuses what routerd would reject, as the public API does.

Exit 0 when every request was confirmed, 1 when any was refused or failed, 2 when the
config, the settings or the input must be fixed first.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import anyio

from routerd.client import (
    BrokerUnavailable,
    NotConfirmed,
    Publisher,
    PublishError,
    RequestInvalid,
    Unroutable,
)
from routerd.config.loader import load
from routerd.config.model import ConfigError
from routerd.ops.common import (
    Command,
    ExitCode,
    OutputFormat,
    display,
    envelope,
    plural,
    report_broken,
    write_json,
)
from routerd.ops.generate import Mix
from routerd.ops.generate import requests as generated
from routerd.ops.send_input import InputError, read_requests
from routerd.settings import Settings, SettingsError

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 64


@dataclass
class Tally:
    """What became of the requests so far; updated by the senders, read by the progress."""

    total: int
    sent: int = 0
    confirmed: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    refused_requests: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def failed_requests(self) -> int:
        return sum(self.failed.values())

    @property
    def done(self) -> int:
        return self.confirmed + self.refused_requests + self.failed_requests

    def record(self, result: str | PublishError) -> None:
        if isinstance(result, str):
            self.confirmed += 1
        elif isinstance(result, RequestInvalid):
            self.refused_requests += 1
            # Each code once per request: "how many requests had a schema violation".
            self.refused.update({str(reason.code) for reason in result.reasons})
        else:
            kind = failure_kind(result)
            self.failed[kind] += 1
            self.examples.setdefault(kind, str(result))


def failure_kind(error: PublishError) -> str:
    """The kind of a failed send, as the summary counts it (enum-like, no spaces)."""
    if isinstance(error, NotConfirmed):
        return f"not_confirmed_{error.cause.value}"
    if isinstance(error, Unroutable):
        return "unroutable"
    if isinstance(error, BrokerUnavailable):
        return "broker_unavailable"
    return "error"


@dataclass(frozen=True, slots=True)
class SendOptions:
    amqp_url: str
    redacted_url: str
    config: Path
    check: bool = False
    rate: float | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    connect_timeout: float = 10.0
    publish_timeout: float = 10.0


async def send_all(
    requests: Iterable[Mapping[str, Any]],
    tally: Tally,
    options: SendOptions,
    *,
    queue: str,
    progress: Progress | None = None,
) -> None:
    """Publish every request, recording each result in `tally`; returns when all are done."""
    publisher = Publisher(
        options.amqp_url,
        # The config even without the check: it says which source each request goes to.
        config=options.config,
        check=options.check,
        connect_timeout=options.connect_timeout,
        publish_timeout=options.publish_timeout,
        app_id="routerd-send",
    )
    try:
        await publisher.connect()
    except BrokerUnavailable as exc:
        # Nothing can be sent: every request fails the same way, without waiting for each
        # (nor generating each).
        tally.sent = tally.total
        tally.failed[failure_kind(exc)] = tally.total
        tally.examples[failure_kind(exc)] = str(exc)
        await publisher.close()
        return

    async def paced() -> AsyncIterator[Mapping[str, Any]]:
        start = anyio.current_time()
        for index, request in enumerate(requests):
            if options.rate:
                # The schedule, not the previous send, sets each start: a slow confirm is
                # caught up on instead of lowering the rate.
                await anyio.sleep_until(start + index / options.rate)
            tally.sent += 1
            yield request

    try:
        async with anyio.create_task_group() as outer:
            if progress is not None:
                outer.start_soon(progress.run, tally)
            await publisher.send_each(
                paced(), lambda _, result: tally.record(result), max_in_flight=options.max_in_flight
            )
            # Every send has its result: only the progress display is left to stop.
            outer.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await publisher.close()
        if progress is not None:
            progress.clear()


class Progress:
    """A one-line progress display (rate, confirmed, failed, ETA), rewritten in place with
    a carriage return every `interval` seconds; for a terminal, never for a pipe."""

    def __init__(self, out: TextIO, interval: float = 0.5) -> None:
        self.out = out
        self.interval = interval
        self._width = 0

    async def run(self, tally: Tally) -> None:
        start = anyio.current_time()
        while True:
            await anyio.sleep(self.interval)
            self.show(self.line(tally, anyio.current_time() - start))

    @staticmethod
    def line(tally: Tally, elapsed: float) -> str:
        rate = tally.done / elapsed if elapsed > 0 else 0.0
        text = (
            f"{tally.done}/{tally.total} done, "
            f"{rate:.0f}/s, {tally.confirmed} confirmed, {tally.refused_requests} refused, "
            f"{tally.failed_requests} failed"
        )
        if rate > 0:
            text += f", ETA {max(0.0, (tally.total - tally.done) / rate):.0f} s"
        return text

    def show(self, text: str) -> None:
        self.out.write("\r" + text.ljust(self._width))
        self.out.flush()
        self._width = len(text)

    def clear(self) -> None:
        if self._width:
            self.out.write("\r" + " " * self._width + "\r")
            self.out.flush()
            self._width = 0


@dataclass(frozen=True, slots=True)
class Summary:
    tally: Tally
    elapsed: float
    queue: str
    input: str
    check: bool
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.tally.sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def exit_code(self) -> ExitCode:
        t = self.tally
        complete = t.confirmed == t.sent == t.total
        return ExitCode.OK if complete and not self.interrupted else ExitCode.FAILED

    def line(self) -> str:
        t = self.tally
        text = (
            f"{plural(t.sent, 'request')} sent to {self.queue}: {t.confirmed} confirmed, "
            f"{t.refused_requests} refused, {t.failed_requests} failed "
            f"in {self.elapsed:.1f} s ({self.rate:.0f}/s)"
        )
        if self.interrupted:
            # Those in flight may or may not have been stored.
            text += f"; interrupted, {t.sent - t.done} without an answer, {t.total - t.sent} unsent"
        return text

    def text(self) -> str:
        t = self.tally
        lines = [self.line()]
        for code, n in sorted(t.refused.items()):
            lines.append(f"  refused by the pre-check: {n} {code}")
        for kind, n in sorted(t.failed.items()):
            lines.append(f"  failed: {n} {kind}, e.g. {t.examples[kind]}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        t = self.tally
        return envelope(
            Command.SEND,
            self.exit_code,
            (),
            summary=self.line(),
            input=self.input,
            queue=self.queue,
            check=self.check,
            interrupted=self.interrupted,
            requests=t.total,
            sent=t.sent,
            confirmed=t.confirmed,
            refused={"requests": t.refused_requests, "reasons": dict(sorted(t.refused.items()))},
            failed={
                "requests": t.failed_requests,
                "kinds": dict(sorted(t.failed.items())),
                "examples": dict(sorted(t.examples.items())),
            },
            elapsed_seconds=round(self.elapsed, 3),
            rate=round(self.rate, 1),
        )


def run_send(
    requests: Iterable[Mapping[str, Any]],
    total: int,
    options: SendOptions,
    fmt: OutputFormat,
    out: TextIO,
    *,
    input_name: str,
    progress: Progress | None = None,
) -> ExitCode:
    """The `send` command once its input is known: load the config (for the source queue,
    and the pre-check with `check`), publish, print the summary."""
    try:
        table = load(options.config)
    except ConfigError as exc:
        return report_broken(Command.SEND, exc.problems, fmt, out, display(options.config))
    tally = Tally(total)
    queue = ", ".join(source.queue for source in table.sources)
    log.debug("sending to %s at %s", queue, options.redacted_url)
    start = time.monotonic()
    run = functools.partial(send_all, requests, tally, options, queue=queue, progress=progress)
    interrupted = False
    try:
        anyio.run(run, backend="asyncio")
    except KeyboardInterrupt:
        # Ctrl-C on a long run: what happened so far still deserves its summary.
        interrupted = True
    elapsed = time.monotonic() - start
    summary = Summary(tally, elapsed, queue, input_name, options.check, interrupted)
    if fmt is OutputFormat.JSON:
        write_json(out, summary.as_json())
    else:
        out.write(summary.text() + "\n")
    return summary.exit_code


@dataclass(frozen=True, slots=True)
class SendRequest:
    """What the command line asked for, before anything is read or checked."""

    files: tuple[str, ...] = ()
    generate: int | None = None
    seed: int = 0
    invalid: float = Mix().invalid
    config: Path | None = None
    amqp_url: str | None = None
    check: bool = False
    rate: float | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    connect_timeout: float = 10.0
    publish_timeout: float = 10.0


def send_command(
    asked: SendRequest,
    fmt: OutputFormat,
    out: TextIO,
    err: TextIO,
    environ: Mapping[str, str],
    *,
    stdin: BinaryIO | None = None,
) -> ExitCode:
    """The `send` command: check the usage and settings, read or generate the requests,
    send them with a progress display when `err` is a terminal, print the summary."""
    try:
        settings = Settings.from_sources(
            {"config": asked.config, "amqp_url": asked.amqp_url}, environ
        )
        requests, total, input_name = _input(asked, stdin)
    except (SettingsError, InputError, ValueError) as exc:
        print(f"routerd send: {exc}", file=err)
        return ExitCode.BROKEN
    options = SendOptions(
        amqp_url=settings.amqp_url,
        redacted_url=settings.redacted_url,
        config=settings.config_path,
        check=asked.check,
        rate=asked.rate,
        max_in_flight=asked.max_in_flight,
        connect_timeout=asked.connect_timeout,
        publish_timeout=asked.publish_timeout,
    )
    progress = Progress(err) if err.isatty() else None
    return run_send(requests, total, options, fmt, out, input_name=input_name, progress=progress)


def _input(
    asked: SendRequest, stdin: BinaryIO | None
) -> tuple[Iterable[Mapping[str, Any]], int, str]:
    if asked.rate is not None and asked.rate <= 0:
        raise ValueError(f"--rate must be above 0 requests per second, got {asked.rate}")
    if asked.max_in_flight < 1:
        raise ValueError(f"--max-in-flight must be at least 1, got {asked.max_in_flight}")
    if asked.generate is not None:
        if asked.files:
            raise ValueError("give request files or --generate N, not both")
        if asked.generate < 0:
            raise ValueError(f"--generate takes a count of 0 or more, got {asked.generate}")
        mix = Mix(invalid=asked.invalid)  # checks the share
        return generated(asked.generate, seed=asked.seed, mix=mix), asked.generate, "generated"
    if not asked.files:
        raise ValueError("nothing to send: give request files (- for stdin) or --generate N")
    loaded = read_requests(asked.files, stdin)
    return loaded, len(loaded), "files"
