"""Progress of long runs: :class:`ProgressBar` (a transient tqdm bar on a terminal, or the
caller's callback with one :class:`ProgressEvent` per unit), used by ``fit``, ``predict``
and ``export``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import IO, Any, TypeAlias


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One finished unit of a long run (a training step, a batch, a revealed tensor)."""

    done: int
    """Units finished so far, this one included."""
    total: int | None
    desc: str
    """What is running (``"training"``, ``"export"``, ...)."""
    info: Mapping[str, Any]
    """About this unit: for a training step its iteration, epoch, loss, online rounds,
    online bytes and seconds; for an export the tensor's name."""


ProgressOption: TypeAlias = bool | Callable[[ProgressEvent], object] | None
"""``None``: a bar when stderr is a terminal; ``True``/``False``: always/never a bar; a
callable: called with each :class:`ProgressEvent`, no bar."""


class ProgressBar:
    """The library's progress display: a transient tqdm bar, or the caller's callback.

    ``progress=None`` draws the bar only when ``file`` (stderr) is a terminal (tqdm's
    ``disable=None``), so logs, pipes and CI stay clean; ``delay`` seconds pass before it
    appears (short runs show nothing). A callable gets one :class:`ProgressEvent` per
    :meth:`advance` and no bar is drawn."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        progress: ProgressOption = None,
        *,
        unit: str = "step",
        delay: float = 0.0,
        file: IO[str] | None = None,
    ) -> None:
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise TypeError(
                f"progress must be None, True, False or a callable taking a ProgressEvent, "
                f"got {type(progress).__name__}"
            )
        self.total, self.desc, self.done = total, desc, 0
        self._callback = None if progress is None or isinstance(progress, bool) else progress
        self._bar: Any = None
        if progress is None or progress is True:
            from tqdm import tqdm

            bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                leave=False,
                delay=delay,
                file=sys.stderr if file is None else file,
                disable=None if progress is None else False,
                dynamic_ncols=True,
            )
            self._bar = None if bar.disable else bar

    @property
    def active(self) -> bool:
        """Whether anything is shown or called (callers may skip computing the details)."""
        return self._bar is not None or self._callback is not None

    def advance(
        self,
        n: int = 1,
        info: Mapping[str, Any] | None = None,
        *,
        shown: Mapping[str, Any] | None = None,
    ) -> None:
        """``n`` more units done; ``info`` goes to the callback, ``shown`` (default
        ``info``) after the bar."""
        self.done += n
        if self._bar is not None:
            postfix = info if shown is None else shown
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
        if self._callback is not None:
            event = ProgressEvent(
                self.done, self.total, self.desc, MappingProxyType(dict(info or {}))
            )
            self._callback(event)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
