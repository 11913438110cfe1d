"""A one-line progress bar for terminals (tqdm-like, no dependency)."""
import sys
import time

__all__ = ["ProgressBar"]


class ProgressBar:
    """``bar = ProgressBar(total, desc)``; ``bar.update(n, loss=..)``; ``bar.close()``.
    Redraws one line with ``\\r`` at most every ``min_interval`` seconds; draws nothing
    unless ``enabled`` (default: when ``file`` is a terminal)."""

    def __init__(self, total, desc="", file=None, enabled=None, width=24, min_interval=0.1):
        self.file = sys.stderr if file is None else file
        self.enabled = self.file.isatty() if enabled is None else bool(enabled)
        self.total, self.desc, self.width, self.min_interval = total, desc, width, min_interval
        self.count, self.start, self._last, self._drawn = 0, time.perf_counter(), 0.0, None
        self.postfix = ""

    def update(self, n=1, **postfix):
        self.count += n
        if postfix:
            self.postfix = "  ".join(f"{k} {v}" for k, v in postfix.items())
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.min_interval or self.count >= self.total):
            self._last = now
            self._draw()

    def _draw(self):
        self._drawn = self.count
        frac = min(self.count / self.total, 1.0) if self.total else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        self.file.write(f"\r{self.desc} [{bar}] {self.count}/{self.total} "
                        f"{elapsed:5.1f}s  {self.postfix}\x1b[K")
        self.file.flush()

    def close(self):
        if self.enabled:
            if self._drawn != self.count:
                self._draw()
            self.file.write("\n")
            self.file.flush()
