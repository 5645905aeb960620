"""Client-side pacing of a cloud target's concurrent requests.

A cloud target sends several requests at once (``concurrency``) from a
pool of threads.  The threads share one :class:`RequestGate`, which

* spaces request starts at least ``1 / requests_per_second`` apart, when
  the user sets a rate (a plan's documented limit, say);
* holds *every* thread back when the service says it is overloaded (HTTP
  429 with ``Retry-After``, a throttling status code): one thread's
  throttled answer pauses the others too, instead of each of them
  hammering the service until it is throttled in turn.

The gate decides only *when* a request starts; the budget of requests
(``max_requests``) and the retries stay with the target.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class RequestGate:
    """When the next request may start, shared by the threads of one target."""

    def __init__(self, *, requests_per_second: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if requests_per_second is not None and not requests_per_second > 0:
            raise ValueError(f"requests_per_second={requests_per_second!r}, must be > 0 or None.")
        self.interval = 0.0 if requests_per_second is None else 1.0 / requests_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_start = float("-inf")
        self._paused_until = float("-inf")
        #: Seconds threads spent held back by a pause another thread's answer asked for.
        self.waited_for_pauses = 0.0

    def pause(self, seconds: float) -> None:
        """The service asked to wait: no thread starts a request for ``seconds`` from now."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def wait_turn(self, *, pause_served: bool = False) -> None:
        """Block until this thread may start a request.

        ``pause_served``: the caller has just slept out the pause it set
        itself (a retry after its own throttled answer), so only the rate
        applies to it.
        """
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start + self.interval)
            held = 0.0
            if not pause_served and self._paused_until > start:
                held = self._paused_until - start
                start = self._paused_until
            self._next_start = start
            self.waited_for_pauses += held
        if start > now:
            self._sleep(start - now)
