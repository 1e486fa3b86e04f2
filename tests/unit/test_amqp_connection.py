"""Opening the connection as the options say, and the backoff between attempts: no broker."""

from __future__ import annotations

import anyio
import pytest

from routerd.amqp.connection import Backoff, BrokerUnavailable, connect
from routerd.amqp.options import BrokerOptions

pytestmark = pytest.mark.anyio


def test_backoff_grows_to_its_cap_with_full_jitter() -> None:
    b = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5
    zero = Backoff(0.5, 4.0, rng=lambda: 0.0)
    assert zero.next() == 0.0
    b.attempt = 10_000
    assert b.cap() == 4.0
    with pytest.raises(ValueError, match="0 < minimum <= maximum"):
        Backoff(5, 1)


async def test_the_connect_timeout_bounds_a_silent_broker(silent_port: int) -> None:
    options = BrokerOptions.from_url(f"amqp://u:s3cret@127.0.0.1:{silent_port}/?timeout=0.2")
    with anyio.fail_after(5), pytest.raises(BrokerUnavailable) as caught:
        await connect(options)
    assert "no answer within 0.2s" in str(caught.value)
    assert "s3cret" not in str(caught.value)


async def test_a_missing_ca_file_is_a_broker_unavailable(silent_port: int) -> None:
    options = BrokerOptions.from_url(
        f"amqps://u:p@127.0.0.1:{silent_port}/?cafile=/nonexistent/ca.pem&timeout=2"
    )
    with anyio.fail_after(5), pytest.raises(BrokerUnavailable) as caught:
        await connect(options)
    assert "cannot connect to amqps://u:***@127.0.0.1" in str(caught.value)
