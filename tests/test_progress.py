"""Progress reports: plain lines when the stream is not a terminal, one redrawn line (no colour codes) when it is."""

import io
import re

from pgig_tf.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_off_a_terminal():
    stream = io.StringIO()
    progress = Progress(4, "batch", stream=stream, interval=0)
    for done in range(1, 5):
        progress.update(done)
    lines = stream.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 5  # four lines, each ended by a newline
    assert all(re.fullmatch(r"batch [1-3]/4, \d+ s, about \d+ s left", line) for line in lines[:3]), lines
    assert re.fullmatch(r"batch 4/4, \d+ s", lines[3])
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue() and "\b" not in stream.getvalue()


def test_plain_lines_are_rate_limited_but_the_last_is_always_written():
    stream = io.StringIO()
    progress = Progress(100, "batch", stream=stream, interval=3600)
    for done in range(1, 101):
        progress.update(done)
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == ["batch 1/100", "batch 100/100"]


def test_a_resumed_run_counts_from_its_start():
    progress = Progress(10, "batch", start=6, stream=io.StringIO())
    assert progress.text(8, 20.0) == "batch 8/10, 20 s, about 20 s left"  # 2 steps in 20 s, 2 to go
    assert progress.text(6, 0.0) == "batch 6/10, 0 s"  # nothing done by this run yet: no estimate
    assert Progress(None, "batch", stream=io.StringIO()).text(5, 3.2) == "batch 5, 3 s"


def test_a_terminal_gets_one_redrawn_line_without_colour_codes():
    stream = Terminal()
    progress = Progress(3, "batch", stream=stream, interval=0)
    for done in range(1, 4):
        progress.update(done)
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("\n") and "\x1b" not in text
    unknown = Terminal()
    progress = Progress(None, "batch", stream=unknown, interval=0)
    progress.update(1)
    progress.close()
    assert unknown.getvalue() == "\rbatch 1, 0 s\n"
