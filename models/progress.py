"""A dependency-free progress bar (stderr): redraws in place on a terminal, prints a line
every 10% otherwise (CI logs)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", stream=None):
        self.total, self.desc, self.n = max(1, total), desc, 0
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.time()
        self._last_decile = -1
        self.postfix = ""

    def update(self, k: int = 1, postfix: str = ""):
        self.n += k
        if postfix:
            self.postfix = postfix
        frac = min(1.0, self.n / self.total)
        el = time.time() - self.t0
        eta = el / frac - el if frac > 0 else 0
        line = "%s %3d%% %d/%d [%.0fs<%.0fs] %s" % (self.desc, 100 * frac, self.n, self.total, el, eta, self.postfix)
        if self.tty:
            bar = "#" * int(24 * frac)
            self.stream.write("\r%s |%-24s| %s" % (self.desc, bar, line[len(self.desc) + 1:]))
            self.stream.flush()
        elif int(frac * 10) != self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
