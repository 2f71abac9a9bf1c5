"""How the FAKE hawkBit fills a new rollout's groups: hawkBit's rules, simplified.

hawkBit (``JpaRolloutManagement``) refuses a rollout without a target filter, with both or
neither of ``amountGroups`` and ``groups``, matching no target, with a group percentage
outside 1..100, or whose groups leave targets of the filter out. Each group takes
``targetPercentage`` percent (rounded half up) of the targets that match the rollout's
filter and its own, and that no earlier group took. The fake takes them in controllerId
order; hawkBit in its database's order. The fake is stricter in one way: a THRESHOLD
condition's expression must be an integer 0..100 (hawkBit finds out when it evaluates it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.fiql import FiqlError, Matcher, parse

CONSTRAINT = "hawkbit.server.error.repo.constraintViolation"
SYNTAX = "hawkbit.server.error.rest.param.rsqlSearchSyntax"
CONDITIONS = ("successCondition", "successAction", "errorCondition", "errorAction")


class Refusal(Exception):
    """hawkBit's answer to a rollout it does not create: status, errorCode, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Group:
    fields: dict[str, Any]  # as in MgmtRolloutGroupResponseBody, without id and stamps
    members: list[str]  # controllerIds


def _matcher(query: str, where: str) -> Matcher:
    try:
        return parse(query)
    except FiqlError as exc:
        raise Refusal(400, SYNTAX, f"{where}: {exc}") from None


def _check_conditions(group: Mapping[str, Any], where: str) -> None:
    for key in ("successCondition", "errorCondition"):
        condition = group.get(key) or {}
        expression = condition.get("expression", "")
        if condition.get("condition") == "THRESHOLD" and not (
            expression.isdigit() and 0 <= int(expression) <= 100
        ):
            message = f"{where}.{key}: THRESHOLD needs an integer 0..100, got {expression!r}"
            raise Refusal(400, CONSTRAINT, message)


def fill(body: Mapping[str, Any], targets: Mapping[str, Mapping[str, str]]) -> list[Group]:
    """The groups of a rollout created with ``body`` over ``targets`` (id -> metadata)."""
    query = body.get("targetFilterQuery") or ""
    if not query.strip():
        raise Refusal(400, CONSTRAINT, "Cannot create a Rollout with an empty target query filter!")
    if ("groups" in body) == ("amountGroups" in body):
        message = "Either 'amountGroups' or 'groups' must be defined in the request"
        raise Refusal(400, CONSTRAINT, message)
    base = _matcher(query, "targetFilterQuery")
    matching = sorted(c for c, meta in targets.items() if base((c, meta)))
    if not matching:
        raise Refusal(400, CONSTRAINT, "Rollout does not match any existing targets")
    _check_conditions(body, "rollout")
    requested = body.get("groups")
    if requested is None:
        amount = body["amountGroups"]
        if not 1 <= amount <= len(matching):
            raise Refusal(400, CONSTRAINT, f"amountGroups {amount} for {len(matching)} targets")
        requested = [{"name": f"group-{i + 1}"} for i in range(amount)]
        for i, group in enumerate(requested):
            group["targetPercentage"] = 100 / (amount - i)
    taken: set[str] = set()
    groups = []
    for i, asked in enumerate(requested):
        where = f"groups[{i}]"
        percent = asked.get("targetPercentage", 100)
        if not 1 <= percent <= 100:
            raise Refusal(400, CONSTRAINT, "Target percentage has to be between 1 and 100")
        _check_conditions(asked, where)
        own = asked.get("targetFilterQuery") or ""
        match = _matcher(own, f"{where}.targetFilterQuery") if own else (lambda t: True)
        free = [c for c in matching if c not in taken and match((c, targets[c]))]
        members = free[: math.floor(percent / 100 * len(free) + 0.5)]
        taken.update(members)
        fields = {
            "name": asked["name"],
            "description": asked.get("description", asked["name"]),
            **{k: asked.get(k, body.get(k)) for k in CONDITIONS if asked.get(k, body.get(k))},
            "targetFilterQuery": own,
            "targetPercentage": float(percent),
            "confirmationRequired": asked.get(
                "confirmationRequired", body.get("confirmationRequired", False)
            ),
            "status": "creating",
            "totalTargets": len(members),
        }
        groups.append(Group(fields, members))
    if len(taken) < len(matching):
        message = "Rollout groups don't match all targets that are targeted by the rollout"
        raise Refusal(400, CONSTRAINT, message)
    return groups
