"""controller-runtime's work queue, for DocModel keys: events only mark a DocModel dirty; a
fixed pool of workers reconciles dirty DocModels.

- A key is queued at most once: the hundred events a burst of pods makes for one DocModel
  cost one reconcile, not a hundred, and a new DocModel waits behind distinct DocModels only,
  never behind replays of the same ones.
- A key is never reconciled by two workers at once: one dirtied while a worker has it is
  queued again when that worker is done, so the change is looked at.
- A spec the operator has not handled yet (a new DocModel, an edit) goes to the front: a
  user's change waits for nothing but other users' changes, not for the status churn of
  children (a burst's pods becoming ready).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from docmodel_operator import metrics

Key = tuple[str, str]  # (namespace, name)


class WorkQueue:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[Key] = deque()
        self._dirty: set[Key] = set()
        self._processing: set[Key] = set()
        self._urgent: set[Key] = set()
        self._closed = False

    def add(self, key: Key, urgent: bool = False) -> None:
        """Mark `key` dirty; `urgent` puts it at the front (a spec not handled yet)."""
        with self._cond:
            if urgent:
                self._urgent.add(key)
            if key in self._dirty:
                if urgent and key not in self._processing:
                    self._queue.remove(key)
                    self._queue.appendleft(key)
                return
            self._dirty.add(key)
            if key not in self._processing:
                self._enqueue(key)

    def _enqueue(self, key: Key) -> None:
        if key in self._urgent:
            self._queue.appendleft(key)
        else:
            self._queue.append(key)
        metrics.QUEUE_DEPTH.labels(metrics.CONTROLLER).set(len(self._queue))
        self._cond.notify()

    def get(self) -> Key | None:
        """The next dirty key, marked as processing; None once the queue is closed."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            key = self._queue.popleft()
            metrics.QUEUE_DEPTH.labels(metrics.CONTROLLER).set(len(self._queue))
            self._dirty.discard(key)
            self._urgent.discard(key)
            self._processing.add(key)
            return key

    def done(self, key: Key) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._enqueue(key)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)


def start_workers(queue: WorkQueue, count: int, work: Callable[[str, str], None]) -> None:
    """`count` daemon threads that reconcile what the queue hands out until it is closed."""

    def run() -> None:
        while (key := queue.get()) is not None:
            try:
                work(*key)
            finally:
                queue.done(key)

    for i in range(count):
        threading.Thread(target=run, name=f"reconcile-{i}", daemon=True).start()
