"""One gateway to every model the sidecar calls (judge, task, reflection), through litellm."""

from sidecar.llm.gateway import ROLES, Completion, Gateway, RoleModel
from sidecar.llm.ledger import Ledger, RoleSpend

__all__ = ["ROLES", "Completion", "Gateway", "Ledger", "RoleModel", "RoleSpend"]
