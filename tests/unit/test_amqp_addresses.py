"""Several broker URLs (a RabbitMQ cluster's nodes): parsed, checked, redacted, and tried one
after the other within one connection attempt; and a nacked publish (a quorum queue electing
a leader) tried again for a while. No broker: refused and silent ports, fake publishes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any, cast

import anyio
import pytest

from routerd.amqp import link as link_module
from routerd.amqp.connection import BrokerUnavailable, connect, shuffled
from routerd.amqp.link import BrokerLink
from routerd.amqp.options import BrokerOptions, BrokerOptionsError, redact_urls, split_urls
from routerd.client import Publisher
from routerd.config.loader import load
from routerd.delivery.errors import NotConfirmed, PublishFailed, PublishFailure
from routerd.observe.health import Health
from routerd.observe.metrics import Metrics
from routerd.pipeline.envelope import Decision
from routerd.settings import Settings, SettingsError
from tests.conftest import SHIPPED_CONFIG


def test_a_comma_separates_urls_but_not_inside_a_password() -> None:
    text = "amqp://u:pa,ss@n1:5672/, amqp://u:pa,ss@n2:5672/,amqps://u:x@n3:5671/v"
    assert split_urls(text) == [
        "amqp://u:pa,ss@n1:5672/",
        "amqp://u:pa,ss@n2:5672/",
        "amqps://u:x@n3:5671/v",
    ]
    assert split_urls("amqp://u:p@one/") == ["amqp://u:p@one/"]


def test_every_password_of_the_list_is_redacted() -> None:
    options = BrokerOptions.from_url("amqp://u:s3cret@n1/,amqp://u:s3cret@n2/")
    assert options.urls == ("amqp://u:s3cret@n1/", "amqp://u:s3cret@n2/")
    assert options.redacted_url == "amqp://u:***@n1/,amqp://u:***@n2/"
    assert "s3cret" not in str(options.describe())
    assert "s3cret" not in str(BrokerUnavailable(options.url, "down"))
    assert redact_urls("amqp://u:a,b@n1/,amqp://u:c@n2/") == "amqp://u:***@n1/,amqp://u:***@n2/"


def test_each_url_keeps_its_own_host_and_the_shared_options() -> None:
    options = BrokerOptions.from_url("amqp://u:p@n1:1/?heartbeat=5,amqp://u:p@n2:2/?heartbeat=5")
    assert options.heartbeat == 5
    assert [options.client_url(url) for url in options.urls] == [
        "amqp://u:p@n1:1/?heartbeat=5",
        "amqp://u:p@n2:2/?heartbeat=5",
    ]


def test_urls_that_disagree_on_an_option_are_refused_naming_it() -> None:
    with pytest.raises(BrokerOptionsError) as caught:
        BrokerOptions.from_url("amqp://u:s3cret@n1/?heartbeat=5,amqp://u:s3cret@n2/")
    assert caught.value.key == "heartbeat"
    assert "give every broker URL the same heartbeat" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(BrokerOptionsError, match="scheme"):
        BrokerOptions.from_url("amqp://u:p@n1/,amqps://u:p@n2/")


def test_settings_name_the_bad_url_of_a_list() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources({"amqp_url": "amqp://u:s3cret@n1/,http://n2/"}, {})
    assert caught.value.name == "AMQP URL #2"
    assert "separate the URLs of a cluster's nodes with commas" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    settings = Settings.from_sources(
        {}, {"ROUTERD_AMQP_URL": "amqp://u:s3cret@n1/,amqp://u:s3cret@n2/"}
    )
    assert settings.broker.urls == ("amqp://u:s3cret@n1/", "amqp://u:s3cret@n2/")
    assert settings.redacted_url == "amqp://u:***@n1/,amqp://u:***@n2/"
    assert "s3cret" not in str(settings.describe())


def test_the_client_takes_a_list_of_urls() -> None:
    publisher = Publisher(["amqp://u:p@n1/", "amqp://u:p@n2/"], queue="q")
    assert publisher._options.urls == ("amqp://u:p@n1/", "amqp://u:p@n2/")


def test_the_order_is_a_permutation_that_varies() -> None:
    urls = [f"amqp://n{i}/" for i in range(5)]
    orders = {tuple(shuffled(urls)) for _ in range(200)}
    assert all(sorted(order) == sorted(urls) for order in orders)
    assert len(orders) > 1


def _refused_port() -> int:
    # Bound, never listening: a connection to it is refused at once, like a dead node's.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_given(urls: Sequence[str]) -> list[str]:
    return list(urls)


@pytest.mark.anyio
async def test_one_attempt_tries_every_url_and_names_each_failure(silent_port: int) -> None:
    refused = _refused_port()
    options = BrokerOptions.from_url(
        f"amqp://u:s3cret@127.0.0.1:{refused}/?timeout=0.3,"
        f"amqp://u:s3cret@127.0.0.1:{silent_port}/?timeout=0.3"
    )
    with anyio.fail_after(5), pytest.raises(BrokerUnavailable) as caught:
        await connect(options, order=_as_given)
    text = str(caught.value)
    assert "no broker answered" in text
    assert f"127.0.0.1:{refused}/" in text
    assert f"127.0.0.1:{silent_port}/" in text
    assert "no answer within 0.3s" in text
    assert "s3cret" not in text


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- a nacked publish, as during a quorum queue's leader election ----------------------


def _link() -> BrokerLink:
    table = load(SHIPPED_CONFIG)
    tables = SimpleNamespace(table=table)
    return BrokerLink(BrokerOptions.from_url("amqp://u:p@n1/"), tables, Metrics(), Health())


def _nacks(link: BrokerLink) -> float:
    return sum(
        sample.value
        for metric in link._metrics.registry.collect()
        if metric.name == "routerd_publish_failures"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("cause") == "nack"
    )


def _rejected_decision() -> Decision:
    table = load(SHIPPED_CONFIG)
    return Decision(table.rejected, "rejected", b"{}", {}, {"message_id": "m"})


@pytest.mark.anyio
async def test_a_nack_is_tried_again_until_the_election_is_over() -> None:
    link = _link()
    calls: list[int] = []

    async def publish(decision: Decision) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise PublishFailed(PublishFailure.NACK, "x", "k", "nack")

    with anyio.fail_after(5):
        await link._patient(publish)(_rejected_decision())
    assert len(calls) == 3
    # The publish failure metric counts one failure per delivery: none here.
    assert _nacks(link) == 0


@pytest.mark.anyio
async def test_nacks_past_the_patience_and_other_failures_reach_the_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(link_module, "NACK_PATIENCE", 0.3)
    link = _link()
    causes = iter([PublishFailure.TIMEOUT])

    async def timeout_once(decision: Decision) -> None:
        raise PublishFailed(next(causes), "x", "k")

    with anyio.fail_after(1), pytest.raises(PublishFailed) as caught:
        await link._patient(timeout_once)(_rejected_decision())
    assert caught.value.cause is PublishFailure.TIMEOUT

    async def always_nack(decision: Decision) -> None:
        raise PublishFailed(PublishFailure.NACK, "x", "k")

    started = time.monotonic()
    with anyio.fail_after(5), pytest.raises(PublishFailed) as caught:
        await link._patient(always_nack)(_rejected_decision())
    assert caught.value.cause is PublishFailure.NACK
    assert 0.3 <= time.monotonic() - started < 2


class _StartingPublisher:
    """Publisher.start's contract: the answer later, from a loop callback."""

    def __init__(self, answers: list[PublishFailed | None]) -> None:
        self.answers = answers
        self.started = 0

    def start(self, decision: Decision, then: Callable[[NotConfirmed | None], None]) -> bool:
        self.started += 1
        asyncio.get_running_loop().call_soon(then, self.answers.pop(0))
        return True


async def _started(
    link: BrokerLink,
    publisher: _StartingPublisher,
    publish: Callable[[Decision], Awaitable[None]],
    retries: set[asyncio.Task[None]],
) -> list[NotConfirmed | None]:
    """What `then` heard, once; every retry task done."""
    heard: list[NotConfirmed | None] = []
    answered = anyio.Event()

    def then(error: NotConfirmed | None) -> None:
        heard.append(error)
        answered.set()

    start = link._patient_start(cast(Any, publisher), publish, retries)
    assert start(_rejected_decision(), then)
    with anyio.fail_after(5):
        await answered.wait()
        while retries:
            await asyncio.wait(set(retries))
    return heard


@pytest.mark.anyio
async def test_a_started_publish_that_is_nacked_gets_the_patience_in_a_task() -> None:
    link = _link()
    publisher = _StartingPublisher([PublishFailed(PublishFailure.NACK, "x", "k", "nack")])
    calls: list[int] = []

    async def publish(decision: Decision) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise PublishFailed(PublishFailure.NACK, "x", "k", "nack")

    retries: set[asyncio.Task[None]] = set()
    assert await _started(link, publisher, publish, retries) == [None]
    assert publisher.started == 1 and len(calls) == 2


@pytest.mark.anyio
async def test_a_started_publish_fails_at_once_unless_nacked() -> None:
    link = _link()
    timeout = PublishFailed(PublishFailure.TIMEOUT, "x", "k")

    async def never(decision: Decision) -> None:
        raise AssertionError("only a nack is tried again")

    heard = await _started(link, _StartingPublisher([timeout]), never, set())
    assert heard == [timeout]


@pytest.mark.anyio
async def test_a_retry_cut_short_by_the_session_says_the_channel_closed() -> None:
    link = _link()
    publisher = _StartingPublisher([PublishFailed(PublishFailure.NACK, "x", "k", "nack")])
    retries: set[asyncio.Task[None]] = set()
    heard: list[NotConfirmed | None] = []
    blocked = asyncio.Event()

    async def hangs(decision: Decision) -> None:
        blocked.set()
        await asyncio.Event().wait()

    start = link._patient_start(cast(Any, publisher), hangs, retries)
    assert start(_rejected_decision(), heard.append)
    with anyio.fail_after(5):
        await blocked.wait()
        for task in retries:
            task.cancel()
        await asyncio.wait(set(retries))
    [error] = heard
    assert isinstance(error, PublishFailed) and error.cause is PublishFailure.CHANNEL_CLOSED
