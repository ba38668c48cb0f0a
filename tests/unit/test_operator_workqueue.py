"""The operator's work queue: a DocModel is queued once however many events mark it, is
never reconciled by two workers at once, and a change during its reconcile is looked at."""

from __future__ import annotations

import threading
import time

from docmodel_operator.workqueue import WorkQueue, start_workers


def test_a_key_is_queued_once_and_requeued_when_dirtied_while_processing() -> None:
    queue = WorkQueue()
    for _ in range(5):
        queue.add(("ml", "a"))
    queue.add(("ml", "b"))
    assert len(queue) == 2
    key = queue.get()
    assert key == ("ml", "a")
    queue.add(("ml", "a"))  # an event while a worker has it: not handed to another worker
    assert queue.get() == ("ml", "b")
    assert len(queue) == 0
    queue.done(("ml", "a"))  # ... but queued again once the worker is done
    assert queue.get() == ("ml", "a")
    queue.done(("ml", "a"))
    queue.done(("ml", "b"))
    assert len(queue) == 0


def test_workers_never_reconcile_one_key_twice_at_once() -> None:
    queue = WorkQueue()
    running: set[tuple[str, str]] = set()
    overlaps: list[tuple[str, str]] = []
    calls: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(namespace: str, name: str) -> None:
        key = (namespace, name)
        with lock:
            if key in running:
                overlaps.append(key)
            running.add(key)
            calls.append(key)
        time.sleep(0.01)
        with lock:
            running.discard(key)

    start_workers(queue, 4, work)
    for _ in range(50):
        for name in ("a", "b", "c"):
            queue.add(("ml", name))
        time.sleep(0.001)
    deadline = time.monotonic() + 5
    while (len(queue) or running) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    queue.close()
    assert overlaps == []
    assert {"a", "b", "c"} == {name for _, name in calls}
    assert len(calls) < 150  # events for a key already queued cost nothing


def test_a_spec_not_handled_yet_goes_first_also_when_already_queued_or_in_progress() -> None:
    queue = WorkQueue()
    for name in ("a", "b", "c"):
        queue.add(("ml", name))
    queue.add(("ml", "new"), urgent=True)
    queue.add(("ml", "c"), urgent=True)  # queued already: moved to the front
    assert queue.get() == ("ml", "c")
    assert queue.get() == ("ml", "new")
    queue.add(("ml", "new"), urgent=True)  # edited while a worker has it
    queue.done(("ml", "new"))
    assert queue.get() == ("ml", "new")
    assert [queue.get(), queue.get()] == [("ml", "a"), ("ml", "b")]
