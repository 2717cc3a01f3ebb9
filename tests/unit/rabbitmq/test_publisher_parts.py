"""The publisher's transport-agnostic parts without a broker: confirm tracker, outbox, breaker
gate and outcomes (FakeClock, no network, no thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instrumented_clients.rabbitmq.breaker_gate import BreakerGate
from instrumented_clients.rabbitmq.confirm_channel import ConfirmChannel
from instrumented_clients.rabbitmq.confirms import ConfirmTracker
from instrumented_clients.rabbitmq.connection import RabbitConnection
from instrumented_clients.rabbitmq.errors import MessageDroppedError
from instrumented_clients.rabbitmq.message import OutgoingMessage, PublishResult
from instrumented_clients.rabbitmq.outbox import BROKEN, SENT, SETTLED, Outbox, SendResult
from instrumented_clients.rabbitmq.outcomes import PublishOutcomes
from instrumented_clients.rabbitmq.spool import SpooledMessages
from instrumented_clients.resilience.breaker import BreakerState, CircuitBreaker
from instrumented_clients.resilience.buffer import OverflowPolicy
from instrumented_clients.resilience.context import ClientContext
from instrumented_clients.resilience.tracker import ConnectionTracker
from instrumented_clients.testing import CapturedTelemetry, FakeClock


def message(number: int, sync: bool = False, future: Any = None) -> OutgoingMessage:
    props = pika.BasicProperties(message_id=f"m{number}", delivery_mode=1)
    return OutgoingMessage("", "rk", b"body", props, True,
                           Future() if future is None else future, 0.0, sync)


# -- confirm tracker -------------------------------------------------------------------------------

# One step of a publisher's life on the wire: send some messages, the broker confirms (one tag or
# all up to it, ack or nack), the channel is lost (its unconfirmed messages are re-sent first on
# the next channel), or the confirm timeout expires the oldest.
steps = st.lists(st.one_of(
    st.tuples(st.just("send"), st.integers(1, 6)),
    st.tuples(st.just("confirm"), st.integers(0, 30), st.booleans(),
              st.sampled_from(["ack", "nack"])),
    st.tuples(st.just("lose")),
    st.tuples(st.just("expire"), st.integers(0, 4)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_every_message_is_settled_once_or_resent_in_tag_order(plan: list[tuple[Any, ...]]) -> None:
    tracker: ConfirmTracker[OutgoingMessage] = ConfirmTracker()
    resend: list[OutgoingMessage] = []   # what the outbox would send first on the next channel
    created: list[OutgoingMessage] = []
    settled: dict[str, str] = {}
    on_channel: list[tuple[int, OutgoingMessage]] = []  # (tag, message) sent on this channel
    now = 0.0
    for step in plan:
        now += 1.0
        if step[0] == "send":
            for _ in range(step[1]):
                if resend:
                    outgoing = resend.pop(0)
                else:
                    outgoing = message(len(created))
                    created.append(outgoing)
                tag = tracker.sent(outgoing, now)
                assert tag == (on_channel[-1][0] + 1 if on_channel else 1)
                on_channel.append((tag, outgoing))
        elif step[0] == "confirm":
            _, tag, multiple, outcome = step
            covered = [m for t, m in on_channel if m.message_id not in settled
                       and (t <= tag if multiple else t == tag)]
            got = tracker.confirmed(tag, multiple)
            assert got == covered  # exactly these, in tag order
            for outgoing in got:
                assert outgoing.message_id not in settled  # never settled twice
                settled[outgoing.message_id] = outcome
        elif step[0] == "lose":
            unsettled = [m for _t, m in on_channel if m.message_id not in settled]
            lost = tracker.channel_lost()
            assert lost == unsettled  # the unconfirmed ones, in tag order
            assert len(tracker) == 0
            resend = lost + resend  # re-sent first, before older re-sends still waiting
            tracker.channel_opened()
            on_channel = []
        else:
            horizon = now - step[1]
            expected: list[OutgoingMessage] = []
            for _t, outgoing in on_channel:
                if outgoing.message_id in settled:
                    continue
                if outgoing.sent_at > horizon:
                    break
                expected.append(outgoing)
            assert tracker.expired(horizon) == expected
            for outgoing in expected:
                settled[outgoing.message_id] = "timeout"
    unconfirmed = tracker.channel_lost()
    left = [m.message_id for m in unconfirmed + resend]
    assert len(left) == len(set(left))
    assert not set(left) & set(settled)
    assert set(left) | set(settled) == {m.message_id for m in created}


def test_a_return_marks_the_waiting_message_and_a_lost_channel_clears_it() -> None:
    tracker: ConfirmTracker[OutgoingMessage] = ConfirmTracker()
    first, second = message(1), message(2)
    tracker.sent(first, 1.0)
    tracker.sent(second, 1.0)
    assert tracker.returned("m2", 312, "NO_ROUTE")
    assert not tracker.returned("nope", 312, "NO_ROUTE")
    assert second.returned == (312, "NO_ROUTE")
    assert first.returned is None
    assert tracker.channel_lost() == [first, second]
    assert second.returned is None


def test_take_removes_the_matching_or_the_oldest_in_tag_order() -> None:
    tracker: ConfirmTracker[OutgoingMessage] = ConfirmTracker()
    sent = [message(i) for i in range(4)]
    for index, outgoing in enumerate(sent):
        outgoing.exchange = "x" if index % 2 else ""
        tracker.sent(outgoing, 0.0)
    assert tracker.take(lambda m: m.exchange == "x") == [sent[1], sent[3]]
    assert tracker.take_oldest() == [sent[0]]
    assert list(tracker) == [sent[2]]
    assert tracker.confirmed(1, multiple=True) == []  # tag 1 was taken already
    assert tracker.confirmed(3, multiple=True) == [sent[2]]
    assert tracker.take_oldest() == []


# -- outbox ----------------------------------------------------------------------------------------


class Wire:
    """A ``send`` for the outbox: records what went out; can break or settle on demand."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bool]] = []
        self.break_at: str | None = None
        self.settle: set[str] = set()

    def __call__(self, outgoing: OutgoingMessage, resent: bool) -> SendResult:
        if outgoing.message_id == self.break_at:
            self.break_at = None
            return BROKEN
        if outgoing.message_id in self.settle:
            return SETTLED
        self.sent.append((outgoing.message_id, resent))
        return SENT


@pytest.fixture
def context(telemetry: CapturedTelemetry) -> ClientContext:
    return ClientContext("rabbitmq", "pub", FakeClock(), telemetry)


def make_outbox(context: ClientContext, capacity: int = 10,
                overflow: OverflowPolicy = OverflowPolicy.DROP_OLDEST,
                spool: SpooledMessages | None = None) -> tuple[Outbox, list[Any]]:
    events: list[Any] = []
    outbox = Outbox(capacity, overflow, 0.0, context,
                    on_drop=lambda m, reason: events.append(("drop", m.message_id, reason)),
                    on_buffered=lambda m: events.append(("buffered", m.message_id)),
                    spool=spool)
    return outbox, events


def test_outbox_sends_resends_then_buffer_then_inbox(context: ClientContext) -> None:
    outbox, events = make_outbox(context)
    outbox.accept(message(1))
    outbox.accept(message(2))
    outbox.divert()  # disconnected: the inbox waits in the buffer
    outbox.accept(message(3))
    outbox.resend_first([message(0)])
    wire = Wire()
    assert outbox.send_in_order(wire, 10) == 1
    assert wire.sent == [("m0", True), ("m1", False), ("m2", False), ("m3", False)]
    assert events == [("buffered", "m1"), ("buffered", "m2")]
    assert not outbox
    outbox.check_drained(unconfirmed=1)
    assert not outbox.wait_drained(0)
    outbox.check_drained(unconfirmed=0)
    assert outbox.wait_drained(0)


def test_a_live_publish_never_overtakes_the_buffer_when_the_window_is_short(
    context: ClientContext,
) -> None:
    outbox, _ = make_outbox(context)
    for number in (1, 2, 3):
        outbox.accept(message(number))
    outbox.divert()
    outbox.accept(message(4))
    wire = Wire()
    outbox.send_in_order(wire, 2)  # room for two: the buffer's oldest
    outbox.accept(message(5))
    outbox.send_in_order(wire, 10)
    assert [m for m, _ in wire.sent] == ["m1", "m2", "m3", "m4", "m5"]


def test_a_broken_channel_keeps_the_message_and_the_rest_in_order(context: ClientContext) -> None:
    outbox, _ = make_outbox(context)
    for number in (1, 2, 3):
        outbox.accept(message(number))
    outbox.divert()
    wire = Wire()
    wire.break_at = "m2"
    outbox.send_in_order(wire, 10)
    assert wire.sent == [("m1", False)]
    assert outbox.pending == 2
    outbox.send_in_order(wire, 10)  # the next channel: m2 and m3 go first, as re-sends
    assert wire.sent[1:] == [("m2", True), ("m3", True)]


def test_a_settled_message_does_not_use_the_window(context: ClientContext) -> None:
    outbox, _ = make_outbox(context)
    for number in (1, 2, 3):
        outbox.accept(message(number))
    wire = Wire()
    wire.settle = {"m1"}
    outbox.send_in_order(wire, 2)
    assert [m for m, _ in wire.sent] == ["m2", "m3"]


def test_divert_refuses_blocking_publishes_and_buffers_the_rest(context: ClientContext) -> None:
    outbox, events = make_outbox(context)
    outbox.accept(message(1, sync=True))
    outbox.accept(message(2))
    refused: list[str] = []
    outbox.divert(lambda m: refused.append(m.message_id))
    assert refused == ["m1"]
    assert events == [("buffered", "m2")]


def test_an_inbox_beyond_capacity_overflows_into_the_buffer_policy(context: ClientContext) -> None:
    outbox, events = make_outbox(context, capacity=2)
    for number in range(6):
        outbox.accept(message(number))
    outbox.send_in_order(Wire(), 1)  # the window takes one; five wait, two more than capacity
    assert ("buffered", "m1") in events
    assert outbox.pending <= 2 + 2


@pytest.mark.parametrize(("policy", "sending", "may_go_on"), [
    (OverflowPolicy.RAISE, True, False),
    (OverflowPolicy.RAISE, False, False),
    (OverflowPolicy.BLOCK, False, False),   # block_timeout 0: no room came
    (OverflowPolicy.DROP_OLDEST, False, True),
    (OverflowPolicy.DROP_NEWEST, True, True),  # waited (0 s) for the drain, then the policy
])
def test_flow_control_when_full(context: ClientContext, policy: OverflowPolicy, sending: bool,
                                may_go_on: bool) -> None:
    outbox, _ = make_outbox(context, capacity=1, overflow=policy)
    outbox.accept(message(1))
    assert outbox.full()
    assert outbox.wait_for_room(sending) is may_go_on


def test_the_spool_keeps_messages_until_settled_and_recovers_them_first(
    context: ClientContext, tmp_path: Path,
) -> None:
    path = str(tmp_path / "spool.db")
    spool = SpooledMessages(path)
    outbox, _ = make_outbox(context, spool=spool)
    first, second = message(1), message(2)
    outbox.accept(first)
    outbox.accept(second)
    outbox.spool_settled(first)
    errors: list[BaseException] = []
    outbox.flush_spool(errors.append)
    assert errors == []
    assert spool.count() == 1
    spool.close()
    again = SpooledMessages(path)
    try:
        outbox, _ = make_outbox(context, spool=again)
        assert outbox.recover(lambda record: message(int(record.spool_id) * 100)) == 1
        outbox.accept(message(3))
        wire = Wire()
        outbox.send_in_order(wire, 10)
        assert wire.sent == [("m200", True), ("m3", False)]  # the recovered one goes first
    finally:
        again.close()


# -- breaker gate ----------------------------------------------------------------------------------


def test_the_gate_opens_the_window_closed_waits_open_and_probes_once() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    gate = BreakerGate(breaker)
    assert gate.budget(50, has_work=True) == (50, 0.0)
    breaker.on_failure(ConnectionError("down"))
    assert gate.budget(50, has_work=True) == (0, 10.0)
    clock.advance(10.0)
    assert gate.budget(50, has_work=False) == (0, 0.0)  # no message to probe with
    assert gate.budget(50, has_work=True) == (1, 0.0)
    assert breaker.state is BreakerState.HALF_OPEN
    probe = message(1)
    gate.sent(probe)
    assert gate.budget(50, has_work=True) == (0, 0.0)  # one probe at a time
    gate.settled(probe)
    breaker.on_success()
    assert gate.budget(50, has_work=True) == (50, 0.0)


def test_a_refused_probe_reports_a_failure_and_frees_the_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 5.0, clock=clock)
    gate = BreakerGate(breaker)
    breaker.on_failure(ConnectionError("down"))
    clock.advance(5.0)
    assert gate.budget(10, has_work=True) == (1, 0.0)
    gate.refused(ConnectionError("reset while sending"))
    assert breaker.state is BreakerState.OPEN
    assert gate.budget(10, has_work=True) == (0, 5.0)
    assert BreakerGate(None).budget(7, has_work=False) == (7, 0.0)


# -- outcomes --------------------------------------------------------------------------------------


def make_outcomes(telemetry: CapturedTelemetry, context: ClientContext,
                  on_drop: Callable[[OutgoingMessage, str], object] | None = None,
                  ) -> PublishOutcomes:
    telemetry.prepare("rabbitmq", "pub", ("publish",), ("operation_duration_seconds",
                                                         "publish_confirms_total"))
    outbox, _ = make_outbox(context)
    return PublishOutcomes("pub", telemetry, telemetry.observe_operation("rabbitmq", "pub",
                                                                         "publish"),
                           ConnectionTracker(context), BreakerGate(None), outbox, on_drop)


def test_outcomes_resolve_futures_count_once_and_mark_returns(
    telemetry: CapturedTelemetry, context: ClientContext,
) -> None:
    outcomes = make_outcomes(telemetry, context)
    acked, returned, nacked = message(1), message(2), message(3)
    returned.returned = (312, "NO_ROUTE")
    outcomes.confirmed([acked, returned], "ack")
    outcomes.confirmed([nacked], "nack")
    assert acked.future is not None
    assert returned.future is not None
    assert acked.future.result(0) == PublishResult("ack", "m1")
    assert returned.future.result(0) == PublishResult("returned", "m2", False, 312, "NO_ROUTE")
    assert nacked.future is not None
    assert nacked.future.result(0).outcome == "nack"
    for outcome, count in (("ack", 1), ("returned", 1), ("nack", 1)):
        assert telemetry.value("publish_confirms_total", system="rabbitmq", client="pub",
                               outcome=outcome) == count
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="pub",
                           operation="publish", outcome="success") == 1
    assert telemetry.value("operation_duration_seconds_count", system="rabbitmq", client="pub",
                           operation="publish", outcome="failure") == 2  # returned and nacked


def test_outcomes_resolve_an_asyncio_future_and_leave_a_cancelled_one(
    telemetry: CapturedTelemetry, context: ClientContext,
) -> None:
    outcomes = make_outcomes(telemetry, context)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        done, cancelled = message(1, future=loop.create_future()), \
            message(2, future=loop.create_future())
        cancelled.future.cancel()  # type: ignore[union-attr]
        outcomes.confirmed([done, cancelled], "ack")
        assert (await done.future).outcome == "ack"  # type: ignore[misc]
        outcomes.dropped(cancelled, "overflow")  # already cancelled: left alone

    asyncio.run(run())


def test_a_drop_fails_the_future_and_reaches_the_hook(
    telemetry: CapturedTelemetry, context: ClientContext,
) -> None:
    seen: list[tuple[str, str]] = []
    outcomes = make_outcomes(telemetry, context, lambda m, reason: seen.append(
        (m.message_id, reason)))
    dropped = message(1)
    outcomes.dropped(dropped, "overflow")
    assert dropped.future is not None
    with pytest.raises(MessageDroppedError):
        dropped.future.result(0)
    assert seen == [("m1", "overflow")]


# -- confirm channel: wake-ups ---------------------------------------------------------------------


class IOThread:
    """The connection side a ConfirmChannel uses: calls queued for the I/O thread, run on demand."""

    def __init__(self) -> None:
        self.name = "pub"
        self.calls: list[Callable[[], None]] = []

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.calls.append(fn)

    def call_later(self, _delay: float, _fn: Callable[[], None]) -> None:
        return None

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for fn in calls:
            fn()


class Channel:
    """The pika channel side: records what was published."""

    connection = None

    def __init__(self) -> None:
        self.published: list[str] = []

    def basic_publish(self, _exchange: str, _routing_key: str, _body: bytes, properties: Any,
                      _mandatory: bool) -> None:
        self.published.append(properties.message_id)


def test_a_publish_after_a_full_window_drains_wakes_the_io_thread(
    telemetry: CapturedTelemetry, context: ClientContext,
) -> None:
    outcomes = make_outcomes(telemetry, context)
    outbox = outcomes.outbox
    io = IOThread()
    confirms: ConfirmTracker[OutgoingMessage] = ConfirmTracker()
    channel = ConfirmChannel(cast(RabbitConnection, io), outbox, confirms, outcomes,
                             BreakerGate(None), 2, 30.0, lambda: None, context.clock)
    channel.channel = Channel()
    channel.ready = True
    for number in (1, 2):
        outbox.accept(message(number))
        channel.wake()
    io.run()  # both sent: the window is full
    assert channel.channel.published == ["m1", "m2"]
    # The broker confirms both while nothing waits in the outbox.
    channel._on_confirm(SimpleNamespace(method=pika.spec.Basic.Ack(delivery_tag=2,
                                                                   multiple=True)))
    outbox.accept(message(3))
    channel.wake()
    io.run()
    assert channel.channel.published == ["m1", "m2", "m3"]
