"""What /healthz reports beyond its checks: how the sidecar's dependencies are doing. An outage
of one shows here (and in metrics and logs), never as a failed probe: the kubelet cannot mend a
database outage by restarting the sidecar."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from sidecar.store.database import ping

PING_EVERY_S = 5.0


class DatabaseWatch:
    """Pings the database every PING_EVERY_S on a thread of its own, so /healthz answers at once
    from the last result, even while a ping waits out the driver's timeout."""

    def __init__(self, engine: Engine, interval_s: float = PING_EVERY_S) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self._reachable: bool | None = None
        self._checked_at: datetime | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="database-watch", daemon=True)

    def start(self) -> DatabaseWatch:
        self._thread.start()
        return self

    def stop(self, timeout: float) -> bool:
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def state(self) -> dict[str, Any]:
        """`reachable` (None before the first answer) and when that was last learnt."""
        checked = self._checked_at
        return {
            "reachable": self._reachable,
            "checked_at": None if checked is None else checked.isoformat(timespec="seconds"),
        }

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._reachable = ping(self.engine)
            except Exception:  # a driver error SQLAlchemy did not wrap is an answer too
                self._reachable = False
            self._checked_at = datetime.now(UTC)
            self._stopping.wait(self.interval_s)
