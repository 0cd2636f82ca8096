"""When a consumer that is waiting for the group's assignment should give up and rejoin.

A consumer group can stall without any error: the embedded broker (Tansu 0.6.0) keeps naming
as leader a member that left in the middle of a join, so every later member's SyncGroup fails
with REBALANCE_IN_PROGRESS and the group never forms. Nothing fails, so nothing would be said.
This rule bounds the wait: after `bound_s` of waiting (a few session timeouts, far beyond a
healthy join), rejoin; and again every `bound_s` while still waiting. The first rejoin of an
episode is the one to warn about; the later ones are counted.

Pure: no Kafka, the clock is an argument. The rebalance callbacks run on kafka-python's IO
thread and the checks on the poll loop's, so every method holds one lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

REJOIN_AFTER_SESSIONS = 3
"""Session timeouts a consumer waits for the group's assignment before it rejoins (a healthy
join takes about half of one on the embedded broker)."""


@dataclass(frozen=True, slots=True)
class Rejoin:
    """A rejoin that is due. `first`: the episode's first (warn about it); `leader`: the leader
    the group's last join answer named when that was another member (a leader that is no longer
    a member is one to take the place of); `rejoins`: this one included."""

    waited_s: float
    first: bool
    leader: str | None
    rejoins: int


@dataclass(frozen=True, slots=True)
class Recovered:
    """An episode that needed rejoining ended: the consumer joined after `waited_s`."""

    waited_s: float
    rejoins: int

    def __str__(self) -> str:
        return f"joined after {self.waited_s:.0f}s unassigned and {self.rejoins} rejoin(s)"


def rejoin_message(group: str, topic: str, due: Rejoin, ghost: str | None) -> str:
    """What the log says of a rejoin: what happened, and what an operator can check."""
    head = f"consumer group {group}: no partition assigned after {due.waited_s:.0f}s"
    if ghost is not None:
        return (
            f"{head}: its leader {ghost} is not a member of it (on the embedded broker: it "
            "left during a join, and the broker waits for it for ever); rejoining in its place "
            f"(rejoin {due.rejoins})"
        )
    if not due.first:
        return f"{head}; still waiting, rejoin {due.rejoins}"
    return (
        f"{head}; rejoining the group, and again while unassigned. If this repeats, check that "
        f"topic {topic} exists, that no other consumer holds its partitions, and the broker's "
        "health (restarting an embedded broker clears a stuck group)"
    )


class AssignmentWatch:
    """One consumer's wait for the group's assignment. A wait (an episode) starts when the
    consumer subscribes or loses its partitions, and ends when a join completes (with or
    without partitions: a replica with no partition to own is a member, not a stall)."""

    def __init__(self, bound_s: float) -> None:
        if bound_s <= 0:
            raise ValueError(f"bound_s must be positive, not {bound_s}")
        self.bound_s = bound_s
        self._lock = threading.Lock()
        self._since: float | None = None  # when the episode began; None while a member
        self._last_try = 0.0  # when the episode began, or its last rejoin
        self._rejoins = 0
        self._leader: str | None = None

    @property
    def member(self) -> bool:
        """True while a join has completed and no rebalance has begun since."""
        with self._lock:
            return self._since is None

    def waiting(self, now: float) -> None:
        """The consumer needs the group's assignment (subscribed, or its partitions are being
        revoked or were lost); an episode already under way keeps its start."""
        with self._lock:
            if self._since is None:
                self._since = self._last_try = now
                self._rejoins = 0
                self._leader = None

    def answered(self, leader: str, member: str) -> None:
        """A join answer named `leader`; this consumer is `member`."""
        with self._lock:
            self._leader = leader if leader and leader != member else None

    def joined(self, now: float) -> Recovered | None:
        """A join completed: the episode ends. Returns how it went when it needed a rejoin."""
        with self._lock:
            since, rejoins = self._since, self._rejoins
            self._since, self._rejoins, self._leader = None, 0, None
        if since is None or not rejoins:
            return None
        return Recovered(now - since, rejoins)

    def waited(self, now: float) -> float:
        """Seconds this episode has lasted; 0 while a member."""
        with self._lock:
            return 0.0 if self._since is None else max(0.0, now - self._since)

    def due(self, now: float) -> Rejoin | None:
        """The rejoin to make now, if the wait since the episode began (or its last rejoin)
        has reached the bound; it counts as made."""
        with self._lock:
            if self._since is None or now - self._last_try < self.bound_s:
                return None
            self._last_try = now
            self._rejoins += 1
            leader, self._leader = self._leader, None
            return Rejoin(now - self._since, self._rejoins == 1, leader, self._rejoins)
