"""Reload under load: an edited rule changes routing within seconds and loses nothing; a
broken edit is refused and routing goes on unchanged; a ConfigMap symlink swap is seen.

Every request is a plain v1 one that only the catch-all rule matches, published at a steady
pace with an `x-test-seq` header. The edits repoint the catch-all (renaming it too, so the
`x-rule` header says which route table routed each request). Requests published after a
change was observed must all follow it; requests around an edit may go either way, but
every one must arrive exactly once.
"""

from __future__ import annotations

import copy
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.factories import encode, valid_v1
from tests.harness.accounting import SEQ, QueueNames, SteadyPublisher, drain_all, settle
from tests.harness.broker import Broker, Received
from tests.harness.config import (
    configmap_update,
    dump_config,
    make_configmap,
    read_config,
    write_by_rename,
    write_in_place,
)
from tests.harness.daemon import Daemon, metric_sum, running_daemon
from tests.harness.wait import wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

RATE = 1000.0  # requests per second while the config changes
CHANGE_WITHIN = 10.0  # seconds from an edit to routing that follows it
# A problem in the `lint` format: file:line:col: error: message [code]
PROBLEM = r"routes\.yaml:\d+:\d+: error: .*\[[\w-]+\]"


def catch_all_body(seq: int) -> bytes:
    """A valid v1 request no rule but the catch-all matches: no security tag, few recipients."""
    return encode(valid_v1(500_000 + seq, stream="transactional", tags=["receipt"]))


def with_catch_all(config: dict[str, Any], rule: str, target: str) -> str:
    """The config text with the last (catch-all) rule renamed and sent to `target`."""
    data = copy.deepcopy(config)
    last = data["rules"][-1]
    assert "when" not in last, "the shipped config's last rule should be the catch-all"
    category = "bulk" if target == "bulk" else "transactional"
    data["rules"][-1] = {"name": rule, "category": category, "target": target}
    if f"{target}-v2" in data["targets"]:
        # v2 requests carry the partition field elsewhere: the edit must pass lint, or the
        # daemon (rightly) refuses it.
        v2 = {"name": f"{rule}-v2", "when": {"schema_version": 2}, "target": f"{target}-v2"}
        data["rules"].insert(-1, {**v2, "category": category})
    return dump_config(data)


async def depth_over(broker: Broker, queue: str, level: int, what: str) -> int:
    async def probe() -> int:
        return await broker.depth(queue) or 0

    return await wait_for(probe, lambda d: d > level, within=CHANGE_WITHIN, what=what)


async def published_since(pub: SteadyPublisher, mark: int, count: int) -> None:
    async def probe() -> int:
        return pub.mark()

    await wait_for(probe, lambda m: m >= mark + count, within=30, what=f"{count} more published")


def settled(pub: SteadyPublisher) -> int:
    """The first seq surely published after now: the batch in flight may have started before."""
    return pub.mark() + pub.batch


async def source_caught_up(broker: Broker, names: QueueNames) -> None:
    """Wait for a moment the source holds nothing ready: all published so far was delivered."""

    async def probe() -> int:
        return await broker.depth(names.source) or 0

    await wait_for(probe, lambda d: d == 0, within=30, what="the daemon to catch up", interval=0.01)


async def finish(
    broker: Broker, names: QueueNames, pub: SteadyPublisher, daemon: Daemon
) -> str | None:
    """Stop publishing, let the daemon route the rest, stop it cleanly; None or a timeout."""
    total = await pub.stop()
    timed_out = await settle(broker, names, total, within=60)
    assert await daemon.stop(within=30) == 0
    return timed_out


async def routed_exactly_once(
    broker: Broker, names: QueueNames, pub: SteadyPublisher
) -> dict[int, Received]:
    """Drain the targets: every request published arrived once, unchanged, none rejected."""
    received = await drain_all(broker, names)
    rejected = [r for r in received if r.queue == names.rejected]
    assert not rejected, f"{len(rejected)} rejected, e.g. {rejected[0].headers}"
    by_seq: dict[int, Received] = {}
    doubled = []
    for r in received:
        seq = r.headers[SEQ]
        if seq in by_seq:
            doubled.append(seq)
        by_seq[seq] = r
        assert r.body == pub.sent[seq], f"seq {seq}: body changed"
    lost = sorted(set(range(len(pub.sent))) - by_seq.keys())
    assert not lost, f"{len(lost)} of {len(pub.sent)} lost, seqs {lost[:20]}"
    assert not doubled, f"{len(doubled)} delivered twice, seqs {doubled[:20]}"
    return by_seq


def assert_window(
    by_seq: dict[int, Received], seqs: Sequence[int], queue: str, rule: str, why: str
) -> None:
    wrong = [(s, by_seq[s].queue, by_seq[s].headers.get("x-rule")) for s in seqs]
    wrong = [w for w in wrong if w[1:] != (queue, rule)]
    assert not wrong, f"{why}: {len(wrong)} of {len(seqs)} not in {queue} by {rule}: {wrong[:5]}"


@asynccontextmanager
async def under_load(
    broker: Broker, names: QueueNames, config: Path, amqp_url: str, log_dir: Path, warm_up: int
) -> AsyncIterator[tuple[Daemon, SteadyPublisher]]:
    """routerd on `config`, catch-all requests published at RATE, `warm_up` of them routed."""
    pub = SteadyPublisher(broker, names.source, catch_all_body, rate=RATE)
    async with (
        running_daemon(config, amqp_url, log_dir) as daemon,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(pub.run)
        await depth_over(broker, names.transactional, warm_up, "routing to transactional")
        yield daemon, pub


async def reroute(
    broker: Broker, pub: SteadyPublisher, save: Callable[[], None], queue: str, what: str
) -> tuple[float, int]:
    """Save a config that sends the catch-all to `queue`, wait for routing to follow it.

    Returns the seconds that took, and the first seq surely routed by the new table.
    """
    level = await broker.depth(queue) or 0
    start = time.monotonic()
    save()
    await depth_over(broker, queue, level, what)
    return time.monotonic() - start, settled(pub)


async def test_edit_under_load_reroutes_broken_edit_is_refused(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    original = read_config(isolated_config)
    to_bulk = with_catch_all(original, "catch-all-bulk", "bulk")
    to_transactional = with_catch_all(original, "catch-all-again", "transactional")
    latencies = {}

    async with under_load(broker, names, isolated_config, amqp_url, log_dir, 100) as (daemon, pub):
        # 1. An editor that writes in place repoints the catch-all to bulk.
        latencies["edit in place"], switched = await reroute(
            broker,
            pub,
            lambda: write_in_place(isolated_config, to_bulk),
            names.bulk,
            "the edit to route to bulk",
        )

        # 2. A broken edit, saved by rename: refused with a located problem; routing unchanged.
        offset = len(daemon.log_text())
        write_by_rename(isolated_config, with_catch_all(original, "broken", "no-such-target"))
        await daemon.wait_for_log(PROBLEM, within=CHANGE_WITHIN, after=offset)
        await published_since(pub, pub.mark(), 200)
        assert await daemon.ready_status() == 200
        fixed = pub.mark()
        await source_caught_up(broker, names)  # so all before `fixed` met the old table

        # 3. A good edit after the refused one still applies.
        latencies["edit by rename after a refused one"], back = await reroute(
            broker,
            pub,
            lambda: write_by_rename(isolated_config, to_transactional),
            names.transactional,
            "the fix to apply",
        )
        await published_since(pub, back, 200)
        timed_out = await finish(broker, names, pub, daemon)

    print(f"reload latencies under {RATE:.0f} req/s: {latencies}; published {len(pub.sent)}")
    by_seq = await routed_exactly_once(broker, names, pub)
    assert timed_out is None, timed_out
    assert_window(
        by_seq, range(switched, fixed), names.bulk, "catch-all-bulk", "after the edit to bulk"
    )
    assert_window(
        by_seq, range(back, len(pub.sent)), names.transactional, "catch-all-again", "after fix"
    )


async def test_configmap_symlink_swap_is_picked_up(
    broker: Broker,
    names: QueueNames,
    isolated_config: Path,
    amqp_url: str,
    log_dir: Path,
    tmp_path: Path,
) -> None:
    original = read_config(isolated_config)
    volume = tmp_path / "configmap"
    config = make_configmap(volume, isolated_config)
    to_bulk = with_catch_all(original, "catch-all-bulk", "bulk")
    to_transactional = with_catch_all(original, "catch-all-again", "transactional")
    latencies = {}

    async with under_load(broker, names, config, amqp_url, log_dir, 100) as (daemon, pub):
        latencies["first swap"], switched = await reroute(
            broker,
            pub,
            lambda: configmap_update(volume, {"routes.yaml": to_bulk}),
            names.bulk,
            "the swapped config to route to bulk",
        )
        await published_since(pub, switched, 200)
        swapped_back = pub.mark()
        await source_caught_up(broker, names)

        # kubelet deleted the folder the first table came from: a second swap must work too.
        latencies["second swap"], back = await reroute(
            broker,
            pub,
            lambda: configmap_update(volume, {"routes.yaml": to_transactional}),
            names.transactional,
            "the second swap to apply",
        )
        await published_since(pub, back, 200)
        timed_out = await finish(broker, names, pub, daemon)

    print(f"ConfigMap swap latencies under {RATE:.0f} req/s: {latencies}")
    by_seq = await routed_exactly_once(broker, names, pub)
    assert timed_out is None, timed_out
    assert_window(
        by_seq, range(switched, swapped_back), names.bulk, "catch-all-bulk", "after first swap"
    )
    assert_window(
        by_seq, range(back, len(pub.sent)), names.transactional, "catch-all-again", "after 2nd"
    )


async def test_sighup_reloads_and_routing_goes_on(
    broker: Broker, names: QueueNames, isolated_config: Path, amqp_url: str, log_dir: Path
) -> None:
    async with under_load(broker, names, isolated_config, amqp_url, log_dir, 50) as (daemon, pub):
        before = metric_sum(await daemon.metrics(), "routerd_reloads_total")
        daemon.send(signal.SIGHUP)
        await wait_for(
            daemon.metrics,
            lambda m: metric_sum(m, "routerd_reloads_total") > before,
            within=CHANGE_WITHIN,
            what="a reload counted after SIGHUP",
        )
        assert daemon.returncode is None, "SIGHUP must not stop routerd"
        assert await daemon.ready_status() == 200
        await published_since(pub, pub.mark(), 100)
        timed_out = await finish(broker, names, pub, daemon)
    by_seq = await routed_exactly_once(broker, names, pub)
    assert timed_out is None, timed_out
    assert_window(by_seq, range(len(pub.sent)), names.transactional, "transactional", "SIGHUP")
