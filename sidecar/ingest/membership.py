"""The few places the traffic consumer reaches past KafkaConsumer's public surface, to mend a
group the embedded broker has stalled. All of them are kafka-python's (pinned in the lock file).

Tansu 0.6.0 removes a member that leaves during a join (LeaveGroup while the group is forming)
but keeps it as the group's leader; a leader that is no longer a member never misses a
heartbeat, so it is never replaced, and no later member is ever assigned. So:
- a consumer that stops while it waits for a join does not leave: it goes as a crash does, and
  the group drops it one session timeout later (replacing it as leader when it was one);
- a consumer stalled by such a leader rejoins under that leader's member id: the broker takes it
  as the leader, and the group forms. Only when DescribeGroups does not list the leader its
  last join answer named. On Apache Kafka that happens only when the leader has left since; a
  join under its id is then refused (UNKNOWN_MEMBER_ID) and kafka-python joins as a new member.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.protocol.admin import DescribeGroupsRequest

DESCRIBE_TIMEOUT_MS = 5000

JoinAnswer = Callable[[str, str], None]
"""Called with (leader, member) for each successful JoinGroup answer."""


def listen_for_join_answers(consumer: KafkaConsumer, heard: JoinAnswer) -> None:
    """Tell `heard` who each successful join answer names as leader. KafkaConsumer does not
    say; its coordinator reads the answer in `_process_join_group_response`."""
    coordinator = consumer._coordinator
    process = coordinator._process_join_group_response

    def processed(response: Any, send_time: float) -> Any:
        result = process(response, send_time)  # raises on an error answer
        heard(str(response.leader or ""), str(response.member_id or ""))
        return result

    coordinator._process_join_group_response = processed


def close(consumer: KafkaConsumer, leave: bool) -> None:
    """Close without committing; without `leave`, the group is not told (the member expires after
    its session timeout), because a LeaveGroup sent during a join is what stalls Tansu."""
    if not leave:
        consumer._coordinator.maybe_leave_group = _stay
    consumer.close(autocommit=False)


def join_as(consumer: KafkaConsumer, member_id: str) -> None:
    """Make the consumer's next JoinGroup carry `member_id` (before its first poll)."""
    consumer._coordinator.reset_generation(member_id=member_id)


def absent_leader(consumer: KafkaConsumer, leader: str | None) -> str | None:
    """`leader` when the group coordinator does not list it among the group's members."""
    if leader is None:
        return None
    members = group_members(consumer)
    return leader if members is not None and leader not in members else None


def group_members(consumer: KafkaConsumer) -> frozenset[str] | None:
    """The member ids the group coordinator lists for the consumer's group; None when it cannot
    be asked. (KafkaAdminClient.describe_groups asks for the authorized operations too, and
    fails to parse Tansu's answer to that.)"""
    coordinator = consumer._coordinator
    node = coordinator.coordinator_id
    if node is None:
        return None
    request = DescribeGroupsRequest(
        groups=[coordinator.group_id], include_authorized_operations=False
    )

    async def describe() -> Any:
        return await coordinator._manager.send(
            request, node_id=node, request_timeout_ms=DESCRIBE_TIMEOUT_MS
        )

    try:
        response = coordinator._net.run(describe)
    except KafkaError:
        return None
    found = [group for group in response.groups if group.group_id == coordinator.group_id]
    if len(found) != 1 or found[0].error_code:
        return None
    return frozenset(member.member_id for member in found[0].members)


def _stay(reason: str | None = None, timeout_ms: int | None = None) -> None:
    """In place of the coordinator's `maybe_leave_group`: send nothing."""
