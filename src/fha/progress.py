"""Progress reports that suit where they go.

On a terminal a tqdm bar redraws itself in place; in a file (``fha train ... > log.txt``,
every cluster job) redraws would leave carriage returns and copies of the bar, so plain
lines are written instead, at every tenth of the work or every `LINE_INTERVAL_S` seconds,
whichever comes first, and at the end::

    step 300/900 | loss 3.21 | lr 5.0e-03 | 61k tok/s | eta 0:41

``fha --quiet`` (`set_mode("off")`) shows nothing. The mode is chosen once per process (the
CLI sets it); library code asks for a `Progress` and gets the right kind.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

MODES = ("auto", "bar", "lines", "off")  # auto: a bar on a terminal, lines elsewhere
LINE_INTERVAL_S = 30.0  # longest quiet stretch between two plain lines
LINE_FRACTION = 0.1  # a plain line at least every tenth of the total
SECONDS_PER_HOUR = 3600
SECONDS_PER_MINUTE = 60
RATE_SUFFIX = "/s"  # fields named like "tok/s" read as "61k tok/s" in plain lines

T = TypeVar("T")

_mode = "auto"


def set_mode(mode: str) -> None:
    """Choose how progress is shown in this process: one of `MODES`."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
    _mode = mode


def resolved_mode(stream: IO[str] | None = None) -> str:
    """ "bar", "lines" or "off" for `stream` (stderr by default)."""
    if _mode != "auto":
        return _mode
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


def format_duration(seconds: float) -> str:
    """0:41, 12:05, 1:02:03."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, SECONDS_PER_HOUR)
    minutes, secs = divmod(rest, SECONDS_PER_MINUTE)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_lr(lr: float) -> str:
    """A learning rate as every progress and log line writes it: ``5.03e-03``."""
    return f"{lr:.2e}"


def short_count(value: float) -> str:
    """Rates and counts in short form: 950, 61k, 1.2M."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            scaled = value / size
            return f"{scaled:.1f}{suffix}" if abs(scaled) < 10 else f"{scaled:.0f}{suffix}"
    return f"{value:.0f}"


class Progress:
    """Counts work done towards `total` and shows it as a bar, as plain lines, or not at all.

    `desc` names the unit of work in plain lines ("step 300/900"); `fields` set with
    `set_fields` follow it ("loss 3.21"). Use as a context manager, or call `close`.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        leave: bool = True,
        stream: IO[str] | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.n = initial
        self._initial = initial
        self._stream = stream if stream is not None else sys.stderr
        self.mode = resolved_mode(self._stream) if enabled else "off"
        self._fields: dict[str, str] = {}
        self._started = time.monotonic()
        self._last_line_time = self._started
        self._last_line_n = initial
        self._closed = False
        self._bar: tqdm | None = None
        self._redirect: contextlib.AbstractContextManager | None = None
        if self.mode == "bar":
            self._redirect = logging_redirect_tqdm()  # log lines go above the bar, not through it
            self._redirect.__enter__()
            self._bar = tqdm(
                total=total, initial=initial, desc=desc, unit=unit, file=self._stream, leave=leave, dynamic_ncols=True
            )

    def set_fields(self, **fields: str) -> None:
        """Values shown beside the count (already formatted), e.g. ``loss="3.21"``."""
        self._fields = dict(fields)
        if self._bar is not None:
            self._bar.set_postfix(self._fields, refresh=False)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and self._line_due():
            self._write_line()

    def _line_due(self) -> bool:
        if self.total is not None and self.n >= self.total:
            return True
        if time.monotonic() - self._last_line_time >= LINE_INTERVAL_S:
            return True
        return self.total is not None and self.n - self._last_line_n >= LINE_FRACTION * self.total

    def line(self) -> str:
        """The plain line for the current state: ``step 300/900 | loss 3.21 | 61k tok/s | eta 0:41``."""
        count = f"{self.desc} {self.n}/{self.total}" if self.total is not None else f"{self.desc} {self.n}"
        parts = [count]
        for name, value in self._fields.items():
            parts.append(f"{value} {name}" if name.endswith(RATE_SUFFIX) else f"{name} {value}")
        elapsed = time.monotonic() - self._started
        done = self.n - self._initial
        if self.total is not None and self.n < self.total and done > 0:
            parts.append(f"eta {format_duration(elapsed / done * (self.total - self.n))}")
        else:
            parts.append(f"elapsed {format_duration(elapsed)}")
        return " | ".join(parts)

    def _write_line(self) -> None:
        self._stream.write(self.line() + "\n")
        self._stream.flush()
        self._last_line_time = time.monotonic()
        self._last_line_n = self.n

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
        if self.mode == "lines" and self.n != self._last_line_n:
            self._write_line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def track(
    items: Iterable[T], total: int | None, desc: str, *, unit: str = "it", enabled: bool = True, leave: bool = False
) -> Iterator[T]:
    """Iterate over `items`, counting each one in a `Progress`."""
    with Progress(total, desc, unit=unit, enabled=enabled, leave=leave) as progress:
        for item in items:
            yield item
            progress.update()
