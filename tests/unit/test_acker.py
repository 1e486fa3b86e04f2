"""The in-order acker: settled in any order, sent in delivery order, runs collapsed."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.amqp.acker import Acker, AckLedger, Action, LedgerError
from routerd.delivery import Outcome

ACK, REQUEUE = Outcome.ACK, Outcome.REQUEUE


def covered(actions: list[Action], delivered: list[int]) -> dict[int, Outcome]:
    """Replay actions like the broker does: which delivered tags each frame settles."""
    settled: dict[int, Outcome] = {}
    for a in actions:
        if a.multiple:
            tags = [t for t in delivered if t <= a.tag and t not in settled]
            assert len(tags) == a.count
        else:
            assert a.tag not in settled
            tags = [a.tag]
        for t in tags:
            settled[t] = a.outcome
    return settled


def test_acks_wait_for_the_head() -> None:
    ledger = AckLedger()
    e1, e2, e3 = (ledger.add(t) for t in (1, 2, 3))
    assert ledger.settle(e3, ACK) is False
    assert ledger.settle(e2, ACK) is False
    assert ledger.take() == []
    assert ledger.settle(e1, ACK) is True
    assert ledger.take() == [Action(ACK, 3, True, 3)]
    assert len(ledger) == 0


def test_a_requeue_splits_the_run() -> None:
    ledger = AckLedger()
    entries = [ledger.add(t) for t in range(1, 6)]
    for entry, outcome in zip(entries, [ACK, ACK, REQUEUE, ACK, ACK], strict=True):
        ledger.settle(entry, outcome)
    assert ledger.take() == [
        Action(ACK, 2, True, 2),
        Action(REQUEUE, 3, False, 1),
        Action(ACK, 5, True, 2),
    ]


def test_leave_is_never_sent() -> None:
    # LEAVE means "the channel's close gives it back": the entry must stay unsettled.
    ledger = AckLedger()
    entry = ledger.add(1)
    with pytest.raises(ValueError, match="LEAVE"):
        ledger.settle(entry, Outcome.LEAVE)
    assert entry.outcome is None
    assert ledger.take() == []


def test_a_single_ack_is_not_multiple() -> None:
    ledger = AckLedger()
    ledger.settle(ledger.add(1), ACK)
    assert ledger.take() == [Action(ACK, 1, False, 1)]


def test_a_tag_never_seen_is_never_acked_by_multiple() -> None:
    # Tag 3 never reached the ledger (aiormq dropped it): it must stay unacked, so no
    # multiple-ack may cover it, now or later.
    ledger = AckLedger()
    for tag in (1, 2, 4, 5, 6):
        ledger.settle(ledger.add(tag), ACK)
    actions = ledger.take()
    assert actions == [
        Action(ACK, 2, True, 2),
        Action(ACK, 4, False, 1),
        Action(ACK, 5, False, 1),
        Action(ACK, 6, False, 1),
    ]
    ledger.settle(ledger.add(7), ACK)
    ledger.settle(ledger.add(8), ACK)
    assert all(not a.multiple for a in ledger.take())


def test_tags_must_increase() -> None:
    ledger = AckLedger()
    ledger.add(5)
    with pytest.raises(LedgerError, match="tag 5 arrived after tag 5"):
        ledger.add(5)


@given(
    st.lists(st.sampled_from([ACK, REQUEUE]), min_size=1, max_size=60),
    st.randoms(use_true_random=False),
    st.sets(st.integers(1, 80), max_size=5),
)
def test_every_delivery_is_settled_once_in_order(
    outcomes: list[Outcome], rnd: object, gaps: set[int]
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    ledger = AckLedger()
    tags: list[int] = []
    tag = 0
    for _ in outcomes:
        tag += 1
        while tag in gaps:
            tag += 1
        tags.append(tag)
    entries = [ledger.add(t) for t in tags]
    order = list(range(len(entries)))
    rnd.shuffle(order)
    actions: list[Action] = []
    for i in order:
        ledger.settle(entries[i], outcomes[i])
        # The acker may run at any point; what it takes must already be final.
        if rnd.random() < 0.3:
            actions.extend(ledger.take())
    actions.extend(ledger.take())
    assert len(ledger) == 0
    # The broker delivered the gap tags too; the ledger never saw them, so no frame may
    # settle them, and a multiple-ack covering one would show up as a count mismatch.
    settled = covered(actions, list(range(1, tags[-1] + 1)))
    assert settled == dict(zip(tags, outcomes, strict=True))
    sent_tags = [a.tag for a in actions]
    assert sent_tags == sorted(sent_tags), "frames leave in delivery order"
    assert sum(a.count for a in actions) == len(tags)


class FakeChannel:
    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bool]] = []
        self.fail = False

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        if self.fail:
            raise RuntimeError("channel closed")
        await anyio.lowlevel.checkpoint()
        self.frames.append(("ack", delivery_tag, multiple))

    async def basic_reject(
        self, delivery_tag: int, *, requeue: bool = True, wait: bool = True
    ) -> None:
        assert requeue
        await anyio.lowlevel.checkpoint()
        self.frames.append(("reject", delivery_tag, False))


@pytest.mark.anyio
async def test_acker_sends_in_order_and_becomes_idle() -> None:
    channel = FakeChannel()
    sent: list[Action] = []
    acker = Acker(channel, on_sent=sent.append)
    entries = [acker.add(t) for t in range(1, 5)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(acker.run)
        acker.settle(entries[2], ACK)
        acker.settle(entries[1], REQUEUE)
        acker.settle(entries[3], ACK)
        await anyio.sleep(0.01)
        assert channel.frames == []
        acker.settle(entries[0], ACK)
        with anyio.fail_after(2):
            await acker.wait_idle()
        tg.cancel_scope.cancel()
    assert channel.frames == [("ack", 1, False), ("reject", 2, False), ("ack", 4, True)]
    assert sum(a.count for a in sent) == 4


@pytest.mark.anyio
async def test_acker_stops_when_the_channel_fails() -> None:
    channel = FakeChannel()
    channel.fail = True
    acker = Acker(channel)
    acker.settle(acker.add(1), ACK)
    with anyio.fail_after(2):
        await acker.run()
    assert isinstance(acker.failed, RuntimeError)
    assert len(acker) == 0
