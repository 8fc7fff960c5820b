"""stdout and stderr that can never block the app.

A write to a pipe nobody reads blocks once the pipe is full (64 KiB): the reports, the
log lines and -- worst -- the summary at a SIGTERM would wait forever, and only SIGKILL
could stop the app (under systemd: a unit that never stops, no summary).  So the app
never writes to its stdout / stderr itself: each line goes into a bounded queue
(``LineWriter.write`` only appends, it never waits), and a daemon thread per stream
writes the queue out with os.write.  When the reader is too slow the queue fills up
and new lines are dropped and counted (``dropped``; the summary has
``stdout_lines_dropped``).  At exit ``close(timeout)`` gives the writer a bounded time
to get the rest (the summary) out; a thread still blocked in write() after that is a
daemon and does not keep the process alive.

The streams are written with os.write on their file descriptors, not through
sys.stdout's buffer: a daemon thread blocked inside sys.stdout.write would hold the
buffer's lock, and the interpreter's final flush of sys.stdout would then abort the
process ("could not acquire lock ... at interpreter shutdown").  A stream without a
file descriptor (pytest's capsys) is written with its own write().
"""

import collections
import os
import sys
import threading
import time

__all__ = ["LineWriter", "install", "uninstall", "out", "err"]

_OUT = None
_ERR = None


class LineWriter:
    def __init__(self, stream, name, max_bytes=256 << 10):
        self.stream = stream
        self.name = name
        self.max_bytes = max_bytes
        try:
            self.fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: capsys
            self.fd = None
        if self.fd is not None:
            try:  # lines written before through the stream's buffer go first
                stream.flush()
            except (OSError, ValueError):
                pass
        self._q = collections.deque()
        self._bytes = 0
        self._busy = False
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0          # lines not written: the queue was full (a blocked reader)
        self.errors = 0           # lines lost to a write error (EPIPE: the reader is gone)
        self.last_error = None
        self.written = 0
        self._t = threading.Thread(target=self._run, name="%s-writer" % name, daemon=True)
        self._t.start()

    def write(self, text, force=False):
        """Queues text (whole lines); never blocks.  False when it was dropped (the queue
        holds max_bytes already; force=True: queued anyway -- the summary)."""
        data = text.encode("utf-8", "backslashreplace")
        with self._cond:
            if self._closed or (not force and self._bytes + len(data) > self.max_bytes):
                self.dropped += text.count("\n") or 1
                return False
            self._q.append(data)
            self._bytes += len(data)
            self._cond.notify_all()
            return True

    def _out(self, data):
        if self.fd is None:
            self.stream.write(data.decode("utf-8", "replace"))
            self.stream.flush()
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:  # someone made the shared pipe non-blocking
                import select
                select.select([], [self.fd], [], 1.0)

    def _run(self):
        while True:
            with self._cond:
                while not self._q and not self._closed:
                    self._cond.wait()
                if not self._q:
                    return
                data = self._q.popleft()
                self._busy = True
            try:
                self._out(data)
                ok = True
            except (OSError, ValueError) as e:  # EPIPE, EBADF, a closed stream
                ok = False
                err = e
            with self._cond:
                self._bytes -= len(data)
                self._busy = False
                if ok:
                    self.written += 1
                else:
                    self.errors += 1
                    self.last_error = "%s: %s" % (type(err).__name__, err)
                self._cond.notify_all()

    def flush(self, timeout):
        """Waits up to timeout s for the queue to be written; True when it was."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._q or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout=2.0):
        """Flushes (bounded by timeout), then stops the thread; True when all was written."""
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if done:
            self._t.join(1.0)
        return done

    def pending(self):
        with self._cond:
            return len(self._q)


def install(stdout=None, stderr=None, max_bytes=256 << 10):
    """Starts the writers for the app's stdout and stderr (sys.stdout / sys.stderr now)."""
    global _OUT, _ERR
    _OUT = LineWriter(stdout or sys.stdout, "stdout", max_bytes)
    _ERR = LineWriter(stderr or sys.stderr, "stderr", max_bytes // 4)
    return _OUT, _ERR


def uninstall(timeout=2.0):
    """Flushes both writers (each within timeout s) and removes them; returns
    (stdout writer, stderr writer) for their counts."""
    global _OUT, _ERR
    o, e = _OUT, _ERR
    _OUT = _ERR = None
    if o is not None:
        o.close(timeout)
    if e is not None:
        e.close(timeout / 2)
    return o, e


def out(text, force=False):
    """A line (or lines) to stdout, through the writer when installed."""
    w = _OUT
    if w is not None:
        return w.write(text, force)
    sys.stdout.write(text)
    sys.stdout.flush()
    return True


def err(text):
    """A line to stderr, through the writer when installed (never raises)."""
    w = _ERR
    if w is not None:
        return w.write(text)
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):
        return False
    return True
