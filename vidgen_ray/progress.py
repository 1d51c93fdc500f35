"""Progress of long driver-side work (probing a bucket, writing clips, generating for an evaluation).

On a terminal: one line redrawn in place (done/total, rate, ETA, drops by reason). Elsewhere
(``ray job logs``, a CI log, a pipe): one log line every ``every_s`` seconds and one at the end, so a
long job shows it is alive without flooding its log.

    with Progress("probe", total=len(files), unit="files") as progress:
        for row in rows:
            progress.update(dropped=row["reason"] if row["status"] == "dropped" else None)
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO

from vidgen_ray.runtime import get_logger

log = get_logger("progress")


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    def __init__(self, what: str, total: int | None, unit: str = "items", every_s: float = 10.0,
                 stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.done = 0
        self.dropped: Counter = Counter()
        self.started = self._last = time.monotonic()
        self._drawn = 0.0

    def line(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        rate = self.done / elapsed
        parts = [f"{self.what}: {self.done}" + (f"/{self.total} {self.unit} {100 * self.done / max(1, self.total):.0f}%"
                                                if self.total else f" {self.unit}")]
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_clock((self.total - self.done) / rate)}")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.dropped:
            parts.append("dropped " + ", ".join(f"{reason} {n}" for reason, n in self.dropped.most_common()))
        return " | ".join(parts)

    def update(self, n: int = 1, dropped: str | None = None) -> None:
        self.done += n
        if dropped:
            self.dropped[dropped] += 1
        now = time.monotonic()
        if self.tty:
            if now - self._drawn >= 0.1:  # at most ten redraws a second
                self.stream.write("\r\x1b[2K" + self.line())
                self.stream.flush()
                self._drawn = now
        elif now - self._last >= self.every_s:
            log.info("%s", self.line())
            self._last = now

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line() + "\n")
            self.stream.flush()
        else:
            log.info("%s (done)", self.line())

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
