"""``[k/N] what (elapsed)`` progress on stderr."""
from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """``[k/N] what  (elapsed)`` on stderr: rewritten in place on a TTY, one line per
    step otherwise; silent when disabled."""

    def __init__(self, total, enabled, stream=None):
        self.total, self.enabled, self.k = total, enabled, 0
        self.out = stream or sys.stderr
        self.tty = self.out.isatty()
        self.t0 = time.perf_counter()

    def step(self, what):
        """Announce the next unit of work."""
        self.k += 1
        if not self.enabled:
            return
        text = f"[{self.k}/{self.total}] {what}  ({time.perf_counter() - self.t0:.0f} s)"
        self.out.write(f"\r\x1b[K{text}" if self.tty else text + "\n")
        self.out.flush()

    def clear(self):
        """Erase the in-place line (before printing results)."""
        if self.enabled and self.tty:
            self.out.write("\r\x1b[K")
            self.out.flush()
