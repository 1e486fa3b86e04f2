"""Publishing decisions on a confirm-mode channel: persistent, mandatory, confirmed.

aiormq's `basic_publish` on a confirm channel waits for the broker's answer and turns it
into one of: the Basic.Ack frame (confirmed), `PublishError` (a mandatory publish came back
as basic.return: no queue was bound for it; the broker returns it before its ack),
`DeliveryError` (basic.nack), `TimeoutError`, or the channel's close exception set on every
pending confirm when the channel or connection closes. `Publisher` maps those onto two
domain errors the request handler understands: `Unroutable` and `PublishFailed`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiormq.abc import AbstractConnection
from aiormq.channel import Channel
from aiormq.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    DeliveryError,
    PublishError,
)
from pamqp.commands import Basic

from routerd.pipeline.envelope import AMQP_PROPERTIES, Decision

log = logging.getLogger(__name__)

# Envelope property names (AMQP's) that pamqp spells differently.
_PAMQP_NAMES = {"type": "message_type"}
# Not republished: the broker refuses (and closes the channel on) a user_id that is not
# the publishing connection's user, and the API's user is not routerd's; delivery_mode is
# always 2 and headers come from the decision.
_DROPPED = frozenset({"user_id", "headers", "delivery_mode"})
_REPUBLISHED = AMQP_PROPERTIES - _DROPPED


class Unroutable(Exception):
    """The broker returned a mandatory publish: no queue is bound for its routing key."""

    def __init__(self, exchange: str, routing_key: str, reply: str) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.reply = reply
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"exchange {self.exchange!r}" if self.exchange else "the default exchange"
        return f"{where} has no queue bound for routing key {self.routing_key!r} ({self.reply})"


class PublishFailed(Exception):
    """The broker did not confirm a publish: nack, timeout, or the channel closed."""

    def __init__(self, cause: str, exchange: str, routing_key: str, detail: str = "") -> None:
        self.cause = cause
        self.exchange = exchange
        self.routing_key = routing_key
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.exchange or '(default exchange)'}/{self.routing_key}"
        text = f"publish to {where} failed: {self.cause}"
        return f"{text} ({self.detail})" if self.detail else text


def basic_properties(decision: Decision) -> Basic.Properties:
    """The decision's properties and headers as pamqp wants them, always persistent."""
    kwargs: dict[str, Any] = {}
    for name, value in decision.properties.items():
        if name in _REPUBLISHED and value is not None:
            kwargs[_PAMQP_NAMES.get(name, name)] = value
    return Basic.Properties(
        **kwargs,
        delivery_mode=2,
        headers=dict(decision.headers),
    )


class Publisher:
    """Publishes decisions on one confirm channel; one Publisher per channel."""

    def __init__(self, channel: Channel, timeout: float) -> None:
        self.channel = channel
        self.timeout = timeout
        # aiormq matches a basic.return to its publish by message_id, so two publishes
        # in flight with the same message_id could swap outcomes: the returned one
        # confirmed, the routed one reported unroutable. Publishes sharing a message_id
        # therefore wait for each other; other publishes are not slowed down.
        self._busy: dict[str, asyncio.Future[None]] = {}

    @classmethod
    async def open(cls, connection: AbstractConnection, confirm_timeout: float) -> Publisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        # The concrete class: its basic_publish takes `wait`, the abstract one does not.
        assert isinstance(channel, Channel)
        return cls(channel, confirm_timeout)

    async def publish(self, decision: Decision) -> None:
        """Return once the broker confirmed the decision; raise Unroutable or PublishFailed."""
        properties = basic_properties(decision)
        message_id = properties.message_id
        if not message_id:
            await self._publish(decision, properties)
            return
        while (earlier := self._busy.get(message_id)) is not None:
            await asyncio.shield(earlier)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._busy[message_id] = done
        try:
            await self._publish(decision, properties)
        finally:
            del self._busy[message_id]
            done.set_result(None)

    async def _publish(self, decision: Decision, properties: Basic.Properties) -> None:
        exchange = decision.target.exchange
        key = decision.routing_key
        try:
            await self.channel.basic_publish(
                decision.body,
                exchange=exchange,
                routing_key=key,
                properties=properties,
                mandatory=True,
                timeout=self.timeout,
                # Do not wait for the socket drain: aiormq holds the channel lock while it
                # drains, which would serialize every publish behind the network.
                wait=False,
            )
        except PublishError as exc:
            raise Unroutable(exchange, key, str(exc.args[0]) if exc.args else "NO_ROUTE") from None
        except DeliveryError as exc:
            raise PublishFailed("nack", exchange, key, str(exc)) from None
        except TimeoutError:
            raise PublishFailed(
                "timeout", exchange, key, f"no confirm within {self.timeout:g}s"
            ) from None
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            raise PublishFailed("channel_closed", exchange, key, repr(exc)) from None
        except asyncio.CancelledError:
            # A closing channel rejects pending confirms with its close reason, and that
            # reason can be CancelledError itself. Only a real cancellation of this task
            # (one it is still being asked for) propagates.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise PublishFailed("channel_closed", exchange, key, "channel closed") from None
        except ValueError as exc:
            # aiormq refuses a routing key longer than 255 bytes before sending anything;
            # no retry can fix that, so it is as unroutable as a basic.return.
            raise Unroutable(exchange, key[:64], str(exc)) from None
        except Exception as exc:
            # Anything else failed before the frame was sent (marshalling, for one): the
            # request goes back to the source and its redelivery bound ends the loop.
            raise PublishFailed("error", exchange, key, repr(exc)) from None
