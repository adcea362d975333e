"""Progress of long loops: a redrawn line on a terminal, plain lines (no carriage returns or colour codes) in a log."""

import sys
import time


class Progress:
    """Reports steps done out of `total`, e.g. `batch 3/12, 21 s, about 63 s left`.

    On a terminal the line is redrawn in place (carriage return, no colour codes); when the
    stream is not a terminal (a log file, a pipe) each report is a line of its own, written at
    most every `interval` seconds and always for the last step, so logs stay short and clean.
    `start` steps count as done before this run (a resumed run): the time left is estimated
    from this run's own steps only.
    """

    def __init__(
        self, total: int | None, unit: str = "batch", start: int = 0, stream=None, interval: float | None = None
    ):
        """
        Args:
            total: steps in all (including `start`); None if unknown (no time left is estimated).
            unit: what a step is called in the report.
            start: steps already done before this run.
            stream: where to write (default sys.stdout, looked up now).
            interval: least seconds between plain lines (default 5; on a terminal 0.1).
        """
        self.total = None if total is None else int(total)
        self.unit, self.start = unit, int(start)
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self.interval = interval if interval is not None else (0.1 if self.interactive else 5.0)
        self._began = time.perf_counter()
        self._last_report = None
        self._width = 0

    def text(self, done: int, elapsed: float) -> str:
        """The report for `done` steps after `elapsed` seconds of this run."""
        if self.total is None:
            return f"{self.unit} {done}, {elapsed:.0f} s"
        message = f"{self.unit} {done}/{self.total}, {elapsed:.0f} s"
        ran = done - self.start
        if 0 < ran and done < self.total:
            message += f", about {elapsed / ran * (self.total - done):.0f} s left"
        return message

    def update(self, done: int) -> None:
        """Reports that `done` steps (counting `start`) are finished."""
        now = time.perf_counter()
        final = self.total is not None and done >= self.total
        if not final and self._last_report is not None and now - self._last_report < self.interval:
            return
        self._last_report = now
        message = self.text(done, now - self._began)
        if self.interactive:
            padding = " " * max(self._width - len(message), 0)
            self._width = 0 if final else len(message)
            self.stream.write("\r" + message + padding + ("\n" if final else ""))
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends a redrawn line that no final step ended (an unknown total, or a loop left early)."""
        if self.interactive and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
