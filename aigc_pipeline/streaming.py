"""Rows in bounded windows: chunks of item states are read when a stage first needs them and
dropped once their results are written, so a run holds a few chunks, whatever the number of rows.

`ChunkFeed` serves the local executor's stage threads: chunk k is cut from the row stream the
first time any stage asks for it (reading overlaps the stages' work), and a stage asking for a
chunk beyond the window waits until the oldest chunk held is released (written). A whole list
of states (a run that must hold every row: residency swaps, reducing stages) is served the same
way without a window.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from .errors import AigcError


class ChunkFeed:
    """Chunks of `size` states from `states`, at most `window` of them held at once (None: no limit).

    `total` is the number of states; `live()` is that less the states that were finished already
    when read (rejected rows: they are written, not run), for progress. A source that raises an `AigcError` (input
    that turns out unreadable half-way) ends the feed; the error is kept in `error`.
    """

    def __init__(self, states: Iterable[Any], size: int, total: int, window: int | None = None) -> None:
        self.origin = states  # what the states are made of: a backend may read the input itself (Ray)
        self.size = max(1, size)
        self.total = total
        self.window = window
        self.error: AigcError | None = None
        self._source: Iterator[Any] = iter(states)
        self._held: dict[int, list[Any]] = {}
        self._entering: dict[int, int] = {}  # per chunk held: its states that were live when read
        self._skipped = 0  # states that were finished when read
        self._produced = 0  # chunks cut so far
        self._released = 0  # leading chunks released (written, dropped)
        self._handled = 0  # leading states a backend read, ran and handed over itself (`handled`)
        self._reading = False
        self._ended = False
        self._cancelled = False
        self._condition = threading.Condition()

    def get(self, index: int) -> list[Any] | None:
        """Chunk `index` (chunks are asked for in order by each stage); None past the end or on cancel.

        A chunk already cut is returned also after a cancel: finished work is still collected.
        """
        with self._condition:
            while index >= self._produced:
                if self._ended or self._cancelled:
                    return None
                if self._reading or not self._room():
                    self._condition.wait()
                    continue
                self._reading = True
                self._condition.release()
                try:
                    chunk = self._read()
                finally:
                    self._condition.acquire()
                    self._reading = False
                    self._condition.notify_all()
                if chunk:
                    entering = sum(1 for state in chunk if state.status is None)
                    self._skipped += len(chunk) - entering
                    self._held[self._produced], self._entering[self._produced] = chunk, entering
                    self._produced += 1
                else:
                    self._ended = True
            return self._held.get(index)

    def entering(self, index: int) -> int:
        """How many states of chunk `index` were live when read (the chunk is held)."""
        with self._condition:
            return self._entering.get(index, 0)

    def live(self) -> int:
        """`total` less the states read so far that were finished already."""
        with self._condition:
            return self.total - self._skipped

    def _room(self) -> bool:
        return self.window is None or self._produced < self._released + self.window

    def _read(self) -> list[Any]:
        try:
            return list(islice(self._source, self.size))
        except AigcError as exc:
            self.error = exc
            return []

    def release(self, index: int) -> None:
        """Drop chunk `index` (released in order, once its results are written)."""
        with self._condition:
            self._held.pop(index, None)
            self._entering.pop(index, None)
            self._released = max(self._released, index + 1)
            self._condition.notify_all()

    def cancel(self) -> None:
        with self._condition:
            self._cancelled = True
            self._condition.notify_all()

    def handed(self, chunk: list[Any]) -> int:
        """A chunk of the next states, read and run by the backend itself, never through `get`
        (executors/ray_input.py): held like a chunk read here until `release(index)` (the index is
        returned); `rest` yields it while held, then the source's states after it."""
        with self._condition:
            index = self._produced
            self._held[index] = chunk
            self._produced += 1
            self._handled += len(chunk)
            return index

    def rest(self) -> Iterator[Any]:
        """After the run: the states of chunks not released yet, then those never read (in order)."""
        with self._condition:
            held = [self._held.pop(index) for index in sorted(self._held)]
            self._released = self._produced
        for chunk in held:
            yield from chunk
        if self.error is None and self._handled < self.total:
            try:
                yield from islice(self._source, self._handled, None)
            except AigcError as exc:
                self.error = exc
