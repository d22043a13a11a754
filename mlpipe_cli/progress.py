"""Progress of long steps: the core says how far it is, the CLI decides whether to draw it.

Core and ops code report what they are doing, whoever called them::

    with progress.task("features", total=len(groups), unit="groups") as bar:
        for group in groups:
            bar.note(f"{source} by {keys}")
            ...
            bar.advance()

    for column in progress.track(columns, "fit", unit="columns"):
        ...

Code further down the stack calls ``progress.advance(k)`` or ``progress.note(text)``; both
reach the innermost open task (a no-op when none is open), so a domain function need not
be handed a callback. Nothing is drawn by default — library use, pipes, ``--json`` and
``-q`` stay silent — because drawing is the job of a ``Renderer`` that the CLI installs
with ``reporting`` only when stderr is a terminal (``cli/common.py`` holds the rich one).

The reporter and the stack of open tasks are context variables: two runs in one process
(threads, tests) never draw into each other. Standard library only, so every layer may
import this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from mlpipe_cli import interrupts

T = TypeVar("T")


class Renderer(Protocol):
    """What draws tasks (the CLI's rich bar; a recorder in tests)."""

    def add(self, description: str, total: float | None, unit: str) -> Any:
        """Show a new task; return a handle for the calls below."""

    def update(self, handle: Any, *, completed: float, total: float | None, detail: str) -> None:
        """The task's state changed."""

    def remove(self, handle: Any) -> None:
        """The task ended (finished or failed): stop showing it."""


_RENDERER: ContextVar[Renderer | None] = ContextVar("mlpipe_progress_renderer", default=None)
_OPEN: ContextVar[tuple[Task, ...]] = ContextVar("mlpipe_progress_tasks", default=())


class Task:
    """One long step: ``total`` units of ``unit`` (None: unknown), ``completed`` so far."""

    def __init__(
        self, description: str, total: float | None, unit: str, renderer: Renderer | None
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.detail = ""
        self._renderer = renderer
        self._handle = renderer.add(description, total, unit) if renderer is not None else None

    def advance(self, amount: float = 1) -> None:
        self.set_completed(self.completed + amount)

    def set_completed(self, value: float) -> None:
        # never past the total: a rounding slip must not draw 101 %
        self.completed = min(value, self.total) if self.total is not None else value
        self._draw()

    def set_total(self, total: float | None) -> None:
        self.total = total
        self._draw()

    def note(self, text: str) -> None:
        """What the step is doing right now (shown beside the bar)."""
        self.detail = text
        self._draw()

    def _draw(self) -> None:
        # each update of a long step is a point where a Ctrl-C that a finalizer or a Rust
        # callback swallowed is raised again (mlpipe_cli.interrupts)
        interrupts.check()
        if self._renderer is not None:
            self._renderer.update(
                self._handle, completed=self.completed, total=self.total, detail=self.detail
            )

    def _close(self) -> None:
        if self._renderer is not None:
            self._renderer.remove(self._handle)
            self._renderer = None


@contextmanager
def task(description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
    """Open a task for the duration of the block; it is removed however the block ends."""
    opened = Task(description, total, unit, _RENDERER.get())
    _OPEN.set((*_OPEN.get(), opened))
    try:
        yield opened
    finally:
        # by identity, not a token reset: a `track` generator abandoned mid-loop is closed
        # later (when it is collected), possibly after tasks opened after it were closed
        _OPEN.set(tuple(t for t in _OPEN.get() if t is not opened))
        opened._close()


def track(
    items: Iterable[T], description: str, total: int | None = None, unit: str = ""
) -> Iterator[T]:
    """Yield ``items`` inside a task counting them. After each item the count is set to the
    items done, so the work of one item may ``advance`` by fractions of 1 in between."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with task(description, total=total, unit=unit) as bar:
        for done, item in enumerate(items, start=1):
            yield item
            bar.set_completed(done)


def current() -> Task | None:
    """The innermost open task of this context (None when none is open)."""
    stack = _OPEN.get()
    return stack[-1] if stack else None


def advance(amount: float = 1) -> None:
    """Advance the innermost open task (a no-op when none is open)."""
    bar = current()
    if bar is not None:
        bar.advance(amount)


def note(text: str) -> None:
    """Describe what the innermost open task is doing now (a no-op when none is open)."""
    bar = current()
    if bar is not None:
        bar.note(text)


@contextmanager
def reporting(renderer: Renderer) -> Iterator[None]:
    """Draw every task opened in this block (and below it) with ``renderer``."""
    token = _RENDERER.set(renderer)
    try:
        yield
    finally:
        _RENDERER.reset(token)
