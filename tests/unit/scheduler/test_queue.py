from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from tests.fakes import FAKE_VOICE, FakeEngine
from voxserve.engines.base import PreparedSegment
from voxserve.obs.trace import RequestTrace
from voxserve.scheduler.pool import Priority
from voxserve.scheduler.queue import Job, SegmentQueue
from voxserve.types import SynthesisParams

ENGINE = FakeEngine()


def job(tenant: str, text: str, priority: Priority = Priority.LATER_SEGMENT) -> Job:
    segment = PreparedSegment(SynthesisParams(text=text, voice=FAKE_VOICE))
    return Job(ENGINE, segment, RequestTrace(f"{tenant}-{text}"), Future(), 1e18, priority, tenant)


def drain(queue: SegmentQueue) -> list[str]:
    order = []
    while len(queue):
        taken = queue.get()
        assert taken is not None
        order.append(taken.segment.params.text)
    return order


def test_a_flooding_tenant_cannot_starve_another() -> None:
    queue = SegmentQueue()
    for n in range(6):
        queue.put(job("a", f"a{n}"), due=float(n))
    queue.put(job("b", "b0"), due=100.0)
    queue.put(job("b", "b1"), due=101.0)
    assert drain(queue) == ["a0", "b0", "a1", "b1", "a2", "a3", "a4", "a5"]


def test_shares_follow_the_audio_each_tenant_was_given() -> None:
    """A tenant whose segments are twice as long gets half as many of them."""
    queue = SegmentQueue()
    for n in range(4):
        queue.put(job("long", f"L{n}" + "x" * 38), due=float(n))
        queue.put(job("short", f"S{n}" + "x" * 18), due=float(n))
    order = [text[:2] for text in drain(queue)]
    assert order[:6] == ["L0", "S0", "S1", "L1", "S2", "S3"]


def test_first_segments_still_go_before_later_ones_of_any_tenant() -> None:
    queue = SegmentQueue()
    queue.put(job("a", "later"), due=0.0)
    queue.put(job("b", "first", Priority.FIRST_SEGMENT), due=50.0)
    assert drain(queue) == ["first", "later"]


def test_an_idle_tenant_banks_no_credit() -> None:
    queue = SegmentQueue()
    queue.put(job("b", "b-early"), due=0.0)
    drain(queue)
    for n in range(4):
        queue.put(job("a", f"a{n}"), due=float(n))
    assert drain(queue)[:1] == ["a0"]
    for n in range(4, 8):
        queue.put(job("a", f"a{n}"), due=float(n))
    for n in range(3):
        queue.put(job("b", f"b{n}"), due=10.0 + n)
    # b was idle while a ran four segments; it rejoins level with a, not ahead by four.
    assert drain(queue) == ["a4", "b0", "a5", "b1", "a6", "b2", "a7"]


def test_one_tenants_segments_keep_their_due_order() -> None:
    queue = SegmentQueue()
    for due in (3.0, 1.0, 2.0):
        queue.put(job("a", f"due{due:g}"), due=due)
    assert drain(queue) == ["due1", "due2", "due3"]
    assert queue.tenants() == {}


def test_held_room_counts_with_queued_segments_until_filled_or_released() -> None:
    queue = SegmentQueue()
    assert queue.reserve(10, limit=3)  # an idle queue takes any number
    assert not queue.reserve(1, limit=3)
    queue.put(job("a", "x"), due=0.0, reserved=True)
    assert (len(queue), queue.occupancy()) == (1, 10)  # a held place filled: counted once
    queue.release(9)
    assert queue.occupancy() == 1
    assert queue.reserve(2, limit=3)
    assert not queue.reserve(1, limit=3)
    assert queue.reserve(100, limit=0)  # 0: no limit
    drain(queue)
    assert queue.occupancy() == 102


def test_a_caller_limited_to_urgent_jobs_takes_only_those_and_leaves_the_rest() -> None:
    queue = SegmentQueue()
    queue.put(job("a", "later"), due=0.0)
    with ThreadPoolExecutor(1) as taker:
        urgent = taker.submit(queue.get, Priority.FIRST_SEGMENT)  # waits: nothing urgent is queued
        queue.put(job("a", "first", Priority.FIRST_SEGMENT), due=5.0)
        taken = urgent.result(timeout=5)
        assert taken is not None
        assert taken.segment.params.text == "first"
        assert len(queue) == 1
        queue.close()
        # Closed: the later job is not this caller's to take, and it is still there for whoever takes anything.
        assert taker.submit(queue.get, Priority.FIRST_SEGMENT).result(timeout=5) is None
    assert drain(queue) == ["later"]


def test_a_batch_may_take_every_job_of_a_tenant_at_once() -> None:
    queue = SegmentQueue()
    for text in ("one", "two", "six"):
        queue.put(job("a", text), due=0.0)
    queue.put(job("b", "ten"), due=0.0)
    head = queue.get()
    assert head is not None
    taken = queue.take_compatible(head, max_items=8, wait_s=0.0, max_length_ratio=1.5)
    assert sorted(taken_job.segment.params.text for taken_job in [head, *taken]) == ["one", "six", "ten", "two"]
    assert len(queue) == 0
    assert queue.tenants() == {}
    queue.put(job("a", "again"), due=0.0)  # a tenant whose lane a batch emptied queues again as usual
    assert drain(queue) == ["again"]


def test_background_segments_come_after_every_interactive_one() -> None:
    queue = SegmentQueue()
    queue.put(job("jobs:", "book", Priority.BACKGROUND), due=0.0)
    queue.put(job("a", "later"), due=99.0)
    queue.put(job("b", "first", Priority.FIRST_SEGMENT), due=99.0)
    assert drain(queue) == ["first", "later", "book"]


def test_jobs_of_one_key_take_turns_by_progress() -> None:
    """Each job's segments are due by their number, so two jobs alternate rather than one finishing first."""
    queue = SegmentQueue()
    for name in ("A", "B"):
        for n in range(3):
            queue.put(job("jobs:", f"{name}{n}", Priority.BACKGROUND), due=float(n))
    assert drain(queue) == ["A0", "B0", "A1", "B1", "A2", "B2"]


def test_background_segments_hold_no_admission_room_and_do_not_block_a_solo_run() -> None:
    queue = SegmentQueue()
    for n in range(5):
        queue.put(job("jobs:", f"book{n}", Priority.BACKGROUND), due=float(n))
    assert queue.occupancy() == 0
    assert queue.reserve(3, limit=3)  # all the room is still there for interactive requests
    assert queue.holds_only("some-request")  # nothing interactive waits: a lone request may run solo
    queue.put(job("a", "x"), due=0.0, reserved=True)
    assert queue.occupancy() == 3
    assert not queue.holds_only("some-request")


def test_a_live_segments_batch_takes_no_job_segments() -> None:
    queue = SegmentQueue()
    for n in range(3):
        queue.put(job("jobs:", f"book {n}", Priority.BACKGROUND), due=float(n))
    queue.put(job("a", "live 0"), due=0.0)
    queue.put(job("a", "live 1"), due=1.0)
    head = queue.get()
    assert head is not None
    assert head.segment.params.text == "live 0"
    taken = queue.take_compatible(head, max_items=8, wait_s=0.0, max_length_ratio=10.0)
    assert [item.segment.params.text for item in taken] == ["live 1"]
