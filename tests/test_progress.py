"""The progress line: redrawn in place on a terminal, a log line every few seconds elsewhere."""

from __future__ import annotations

import io
import logging

from vidgen_ray.progress import Progress


def test_on_a_terminal_the_line_is_redrawn_and_counts_drops_by_reason():
    out = io.StringIO()
    with Progress("probe", total=4, unit="files", stream=out, tty=True) as progress:
        progress.update()
        progress._drawn = 0.0  # as if a tenth of a second went by
        progress.update(dropped="corrupt")
        progress.update(2, dropped=None)
    text = out.getvalue()
    assert text.count("\r") >= 2 and text.endswith("\n")
    final = text.rsplit("\r\x1b[2K", 1)[-1]
    assert final.startswith("probe: 4/4 files 100%") and "dropped corrupt 1" in final and "ETA" not in final


def test_off_a_terminal_it_logs_every_interval_and_at_the_end(caplog):
    caplog.set_level(logging.INFO, logger="vidgen.progress")
    logger = logging.getLogger("vidgen.progress")
    logger.propagate = True  # the project's handler writes to stdout; caplog listens at the root
    try:
        progress = Progress("prepare train", total=10, unit="clips", every_s=3600, stream=io.StringIO(), tty=False)
        for _ in range(5):
            progress.update()
        assert not caplog.records  # the interval has not passed: nothing yet
        progress.every_s = 0
        progress.update()
        progress.close()
    finally:
        logger.propagate = False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("prepare train: 6/10 clips 60%") and "ETA" in lines[0]
    assert lines[1].endswith("(done)")
