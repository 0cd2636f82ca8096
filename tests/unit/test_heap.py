"""The start-up heap is frozen once litellm is imported, so full collections skip it."""

from __future__ import annotations

import gc
import sys

from sidecar.runtime.heap import freeze_after_imports


def test_heap_is_frozen_after_litellm_is_imported() -> None:
    try:
        freeze_after_imports().join(120)
        assert "litellm" in sys.modules
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
