"""The published file: `<PUBLISH_DIR>/<name>.json`, replaced by a rename.

The publisher renames a temp file over the target, so the file's own inotify watch would die
with the old inode: the directory is watched instead (watchfiles), and every event, and every
`poll_interval_s` without one, compares the file's (inode, mtime, size) with what was last read.
That stat check also catches what events miss: a Kubernetes ConfigMap swaps a `..data` symlink,
not the file. Where watching is impossible (no watchfiles, no directory yet, no inotify left),
the same check runs every `poll_interval_s`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sidecar.client.problems import one_line
from sidecar.client.receiver import MAX_DOCUMENT_BYTES, Receiver

WATCH_STEP_MS = 50
"""watchfiles hands over changes once the directory has been quiet this long…"""
DEBOUNCE_MS = 1_600
"""…or after this long, when it never goes quiet."""

Signature = tuple[int, int, int, int]


class FileSource:
    def __init__(self, path: Path, poll_interval_s: float) -> None:
        self.path = path
        self.poll_interval_s = poll_interval_s
        self.description = f"file {path}"
        self._seen: Signature | None = None
        self._can_watch = True

    def run(self, receiver: Receiver, stopping: threading.Event) -> None:
        self.check(receiver)
        while not stopping.is_set():
            if not self._watch(receiver, stopping):
                stopping.wait(self.poll_interval_s)
                self.check(receiver)

    def check(self, receiver: Receiver) -> None:
        """Read the file when it is not the one last read."""
        try:
            status = os.stat(self.path)
        except OSError as exc:
            self._seen = None
            receiver.problem(f"cannot read {self.path}: {one_line(exc)}")
            return
        signature = (status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)
        if signature == self._seen:
            return
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(MAX_DOCUMENT_BYTES + 1)
        except OSError as exc:
            receiver.problem(f"cannot read {self.path}: {one_line(exc)}")
            return
        self._seen = signature
        document = receiver.check(raw, str(self.path))
        if document is not None:
            receiver.install(document)
            receiver.healthy()

    def _watch(self, receiver: Receiver, stopping: threading.Event) -> bool:
        """Check on each change in the directory until stopped; False when watching is
        impossible now (the caller polls once, then tries again).

        watchfiles' RustNotify rather than its `watch()` generator: the file is checked once
        the watch is in place, so a change made while it was being set up is not missed."""
        if not self._can_watch:
            return False
        try:
            from watchfiles._rust_notify import RustNotify
        except ImportError:
            self._can_watch = False
            receiver.problem(f"watchfiles is not installed: polling every {self.poll_interval_s}s")
            return False
        timeout_ms = max(1, int(self.poll_interval_s * 1000))
        try:
            with RustNotify(
                [str(self.path.parent)],
                debug=False,
                force_polling=False,
                poll_delay_ms=0,
                recursive=False,
                ignore_permission_denied=False,
            ) as watcher:
                self.check(receiver)
                while watcher.watch(DEBOUNCE_MS, WATCH_STEP_MS, timeout_ms, stopping) != "stop":
                    self.check(receiver)
        except Exception as exc:
            receiver.problem(
                f"cannot watch {self.path.parent} ({one_line(exc)}): "
                f"polling every {self.poll_interval_s}s"
            )
            return False
        return True
