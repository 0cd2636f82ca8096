"""Keep the garbage collector's full passes off the start-up heap.

A full (generation 2) collection walks every tracked object, and `gepa-sidecar run` tracks
over half a million once litellm is imported: each pass then holds the GIL for 150-250 ms
(measured), and ingest's allocations keep triggering them, while the consumer's thread waits.
Objects alive once start-up is over live as long as the process, so they are moved out of the
collector's sight (`gc.freeze()`); later garbage is collected as before. Only a process that
is the App's alone does this (`run` asks for it); an App inside a test process does not.
"""

from __future__ import annotations

import gc
import threading

from sidecar.llm.gateway import load_litellm


def freeze_after_imports() -> threading.Thread:
    """On a thread of its own: wait until litellm is imported (by whichever thread gets there
    first; the judge's does at its start), then freeze the heap."""

    def settle() -> None:
        load_litellm()
        gc.collect()
        gc.freeze()

    thread = threading.Thread(target=settle, name="heap-freeze", daemon=True)
    thread.start()
    return thread
