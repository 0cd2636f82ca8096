"""How long candidates have waited for a person: the time each prompt's oldest candidate now in
`awaiting_approval` entered that status, from the audit log (the status column alone says
where a candidate is, not since when)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, and_, func, select

from sidecar.promote.lifecycle import Status
from sidecar.store.database import aware
from sidecar.store.repository import transaction
from sidecar.store.tables import AuditEntry, Candidate

WAITING = Status.AWAITING_APPROVAL.value


def awaiting_approval_since(engine: Engine) -> dict[str, datetime]:
    """prompt name -> when its longest-waiting candidate entered `awaiting_approval` (its last
    entry there, should it have entered twice); prompts with none waiting are absent."""
    entered = (
        select(
            AuditEntry.prompt_name,
            AuditEntry.version,
            func.max(AuditEntry.at).label("at"),
        )
        .where(AuditEntry.to_status == WAITING)
        .group_by(AuditEntry.prompt_name, AuditEntry.version)
        .subquery()
    )
    query = (
        select(Candidate.prompt_name, func.min(entered.c.at))
        .join(
            entered,
            and_(
                entered.c.prompt_name == Candidate.prompt_name,
                entered.c.version == Candidate.version,
            ),
        )
        .where(Candidate.status == WAITING)
        .group_by(Candidate.prompt_name)
    )
    with transaction(engine) as connection:
        return {name: aware(at) for name, at in connection.execute(query)}
