"""The camera state machine, reconnect backoff, frame sampler and drop-oldest queue.

Pure logic (no I/O), so every rule here is unit-tested without a camera.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from inspector.events import CameraState

STATES: tuple[CameraState, ...] = ("connecting", "streaming", "stalled", "backing_off", "stopped")

# Every state may go to stopped (shutdown). stalled is "was streaming, frames stopped":
# it either recovers (→ streaming) or gives the connection up (→ backing_off).
ALLOWED: dict[CameraState | None, frozenset[CameraState]] = {
    None: frozenset({"connecting"}),
    "connecting": frozenset({"streaming", "backing_off", "stopped"}),
    "streaming": frozenset({"stalled", "backing_off", "stopped"}),
    "stalled": frozenset({"streaming", "backing_off", "stopped"}),
    "backing_off": frozenset({"connecting", "stopped"}),
    "stopped": frozenset(),
}


class InvalidTransition(Exception):
    pass


@dataclass(frozen=True)
class Transition:
    number: int
    state: CameraState
    previous: CameraState | None
    reason: str
    at: float  # wall clock, for the status event
    reconnects: int
    stalls: int


class CameraStateMachine:
    """Thread-safe: the reader thread and the stall watchdog both drive it.

    ``on_transition`` runs under the lock, so listeners see transitions in order.
    """

    def __init__(
        self,
        camera_id: str,
        on_transition: Callable[[Transition], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.camera_id = camera_id
        self.on_transition = on_transition
        self.clock = clock
        self.state: CameraState | None = None
        self.transitions = 0
        self.reconnects = 0
        self.stalls = 0
        self.reason = ""
        self._lock = threading.RLock()

    def transition(
        self, new: CameraState, reason: str, *, only_from: CameraState | None = None
    ) -> Transition | None:
        """Move to ``new``; with ``only_from``, do nothing (→ None) unless in that state.

        ``only_from`` makes check-and-move atomic for the watchdog, which races the reader.
        """
        with self._lock:
            if only_from is not None and self.state != only_from:
                return None
            if new not in ALLOWED[self.state]:
                raise InvalidTransition(f"{self.camera_id}: {self.state} → {new} ({reason})")
            if new == "stalled":
                self.stalls += 1
            if new == "connecting" and self.state == "backing_off":
                self.reconnects += 1
            t = Transition(
                number=self.transitions,
                state=new,
                previous=self.state,
                reason=reason,
                at=self.clock(),
                reconnects=self.reconnects,
                stalls=self.stalls,
            )
            self.state = new
            self.reason = reason
            self.transitions += 1
            if self.on_transition is not None:
                self.on_transition(t)
            return t


class Backoff:
    """Capped exponential backoff: initial, 2x initial, ... up to ``maximum``."""

    def __init__(self, initial_s: float, maximum_s: float) -> None:
        self.initial_s = initial_s
        self.maximum_s = max(maximum_s, initial_s)
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.initial_s * (2**self.attempt), self.maximum_s)
        if delay < self.maximum_s:
            self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class Sampler:
    """Decides which grabbed frames to decode, by capture time.

    Keeps the phase (due times advance by exactly one period) so the average rate is the
    asked rate; a frame up to a quarter period early counts, so arrival jitter at e.g.
    15 → 5 fps does not turn "every 3rd frame" into "every 4th". After a gap longer than a
    period the schedule restarts from now instead of catching up with a burst.
    ``fps=None`` takes every frame.
    """

    EARLY_SHARE = 0.25

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self.due: float | None = None

    def take(self, t: float) -> bool:
        if self.period == 0.0:
            return True
        if self.due is None or t - self.due >= self.period:
            self.due = t + self.period
            return True
        if t >= self.due - self.EARLY_SHARE * self.period:
            self.due += self.period
            return True
        return False

    def reset(self) -> None:
        self.due = None


T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """Bounded FIFO whose put never blocks: when full it evicts the oldest item.

    A live camera must never build a backlog; the freshest frame is the useful one.
    """

    POLICY = "drop_oldest"

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: T) -> T | None:
        """Add ``item``; return the evicted oldest item, if any."""
        with self._cond:
            evicted = None
            if len(self._items) >= self.maxsize:
                evicted = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()
            return evicted

    def get(self, timeout: float) -> T | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
