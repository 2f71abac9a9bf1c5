"""An application's ``spec.rollout`` as a hawkBit rollout, and the create-wait-start flow.

:func:`plan` turns the policy into the body of ``POST /rest/v1/rollouts`` (operationId
``create``) before any request is sent, and refuses what hawkBit cannot express with a
:class:`PublishError` that says where and why. :func:`deploy` finds the rollout by name
or creates it, waits until hawkBit has filled its groups, and starts it. The mapping and
its gaps are described in docs/rollouts.md ("hawkBit targets").
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ajour_build.core.errors import PublishError
from ajour_build.core.spec.rollout import RolloutPolicy, Selector
from ajour_build.publish.hawkbit_api import ManagementApi

log = logging.getLogger(__name__)

JSON = dict[str, Any]
NAME_MAX = 63  # a DNS label; hawkBit allows 128
METADATA_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")  # hawkBit splits a field at '.'
MATCHED = ("reverted", "failed_download", "failed")  # all reach hawkBit as an ERROR action


@dataclass(frozen=True)
class RolloutPlan:
    """A rollout to create once, without its distribution set, and whether to start it."""

    name: str
    body: JSON
    start: bool = True


def rollout_name(application: str, version: str) -> str:
    """``<app>-<version>-<hash>``: a DNS label, the same for the same version, and distinct
    for versions that differ only in characters a DNS label cannot hold (``1.0`` / ``1-0``)."""
    tag = hashlib.sha256(f"{application}/{version}".encode()).hexdigest()[:8]
    slug = re.sub(r"[^a-z0-9]+", "-", f"{application}-{version}".lower()).strip("-")
    return f"{slug[: NAME_MAX - len(tag) - 1].rstrip('-')}-{tag}"


def remaining_percents(cumulative: Sequence[int]) -> list[float]:
    """hawkBit's ``targetPercentage`` per group, from Ajour's cumulative percents.

    hawkBit takes each group's share from the targets no earlier group took, so wave k of
    cumulative ``p[k]`` is ``(p[k] - p[k-1]) / (100 - p[k-1])`` of what remains: 10, 50,
    100 become 10, 44.4444, 100. Each result lies in [1, 100], as hawkBit requires.
    """
    shares, before = [], 0
    for share in cumulative:
        if not before < share <= 100:
            raise ValueError(f"cumulative percents must grow within 1..100, got {list(cumulative)}")
        shares.append(round((share - before) * 100 / (100 - before), 4))
        before = share
    return shares


def error_threshold(threshold: float) -> int:
    """hawkBit's integer THRESHOLD for Ajour's fraction: hawkBit pauses when errors are
    *more than* it percent, Ajour when they reach ``threshold``; rounding down keeps hawkBit
    from pausing later than Ajour would on the same counts (0.1 -> 9: pause above 9 %)."""
    return max(0, math.ceil(round(threshold * 100, 6)) - 1)


def fiql_value(value: str, where: str) -> str:
    """A double-quoted RSQL argument: backslash and quote escaped, no wildcard."""
    if "*" in value:
        raise PublishError(
            f"{where}: the value {value!r} holds '*', which hawkBit's target filter reads as a"
            " wildcard and cannot match literally; use a label value without '*'"
        )
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector_fiql(selector: Selector, where: str) -> str:
    """``matchLabels`` as hawkBit target metadata terms joined by ``;`` (AND)."""
    terms = []
    for key, value in sorted(selector.match_labels.items()):
        if not METADATA_KEY.fullmatch(key):
            raise PublishError(
                f"{where}: the label key {key!r} cannot be a hawkBit target filter field"
                " (metadata.<key>): expected 1-128 letters, digits, '_' or '-'; hawkBit splits"
                " the field at '.', and RSQL reserves = ; , ( ) ! ~ < > quotes and spaces."
                " Rename the label, on the devices and as hawkBit target metadata"
            )
        terms.append(f"metadata.{key}=={fiql_value(value, f'{where}.{key}')}")
    return ";".join(terms)


def _condition(threshold: int) -> JSON:
    return {"condition": "THRESHOLD", "expression": str(threshold)}


def plan(policy: RolloutPolicy, application: str, version: str) -> RolloutPlan:
    """The hawkBit rollout for ``policy``; a PublishError for what hawkBit cannot express."""
    at = f"application {application!r}: spec.rollout"
    if policy.cohort is None:
        raise PublishError(
            f"{at}: has no cohort, and hawkBit needs a target filter; every target of the"
            " hawkBit tenant is not 'every device of the application'. Add"
            f" cohort: {{matchLabels: {{app: {application}}}}} and give the application's"
            " hawkBit targets that metadata"
        )
    cohort = selector_fiql(policy.cohort, f"{at}.cohort.matchLabels")
    waves = policy.waves
    where = f"{at}.ramp" if policy.ramp is not None else f"{at}.waves"
    seen_percent = False
    for i, wave in enumerate(waves):
        if i > 0 and wave.approval == "manual":
            raise PublishError(
                f"{where}[{i}]: approval: manual on wave {i + 1} cannot be expressed in hawkBit:"
                " the Management API's only success action is NEXTGROUP, so hawkBit would"
                " start the group without an approval. Only the first wave may be manual (the"
                " rollout is then created and not started), or publish to an OCI target,"
                " where Ajour's delivery worker runs the rollout"
            )
        if wave.selector is not None and seen_percent:
            raise PublishError(
                f"{where}[{i}]: a selector wave after a percent wave cannot be expressed in"
                " hawkBit: its groups take targets in order, so the percent group before it"
                " would take some of these devices, and hawkBit's '!=' on metadata skips"
                " targets without the key. Put the selector waves first"
            )
        seen_percent = seen_percent or wave.percent is not None
    for i, criterion in enumerate(policy.criteria):
        if criterion.outcome not in MATCHED:
            raise PublishError(
                f"{at}.criteria[{i}]: outcome {criterion.outcome} cannot be expressed in"
                " hawkBit: it has no confirm deadline, and an action whose device never"
                f" reports stays running. Use one of {', '.join(MATCHED)}"
            )
    errors: JSON = {}
    if policy.criteria:
        threshold = min(error_threshold(c.threshold) for c in policy.criteria)
        errors = {"errorCondition": _condition(threshold), "errorAction": {"action": "PAUSE"}}
    percents = remaining_percents([w.percent for w in waves if w.percent is not None])
    groups: list[JSON] = []
    for i, wave in enumerate(waves):
        group: JSON = {"name": f"wave-{i + 1}"}
        if wave.selector is not None:
            group["targetFilterQuery"] = selector_fiql(wave.selector, f"{where}[{i}].selector")
            group["targetPercentage"] = 100.0
        else:
            group["targetPercentage"] = percents.pop(0)
        # the dwell cannot be expressed: a wave with one waits for all its devices instead
        group["successCondition"] = _condition(0 if wave.dwell_seconds == 0 else 100)
        groups.append({**group, "successAction": {"action": "NEXTGROUP"}, **errors})
    if not any(w.percent == 100 for w in waves):  # Ajour's rest waits for the end
        rest = {"name": "rest", "targetPercentage": 100.0, "successCondition": _condition(100)}
        groups.append({**rest, "successAction": {"action": "NEXTGROUP"}, **errors})
    body: JSON = {
        "name": rollout_name(application, version),
        "description": f"Ajour: {application} {version} (spec.rollout)",
        "targetFilterQuery": cohort,
        "type": "forced",  # Ajour's devices update when offered: no user interaction
        "confirmationRequired": False,  # Ajour's policy has no user consent step
        "successCondition": _condition(100),
        "successAction": {"action": "NEXTGROUP"},
        **errors,
        "groups": groups,
    }
    return RolloutPlan(body["name"], body, start=waves[0].approval != "manual")


def deploy(
    api: ManagementApi,
    ds_id: int,
    wanted: RolloutPlan,
    *,
    poll_interval: float,
    poll_timeout: float,
) -> None:
    """Create the rollout once (found by name), wait until it is ready, then start it."""
    path, name = "/rollouts", wanted.name
    reply = api.call("GET", path, expect=200, params={"q": f"name=={name}"})  # getRollouts
    found = [r for r in api.page(reply) if r.get("name") == name]
    if found:
        rollout_id = int(found[0]["id"])
    else:
        body = {**wanted.body, "distributionSetId": ds_id}
        created = api.call("POST", path, expect=201, json=body)  # create
        rollout_id = int(api.entities(created, [api.parsed(created, dict)])[0]["id"])
        log.info("hawkBit: created rollout %s (id %d)", name, rollout_id)
    polled = time.monotonic()
    deadline = min(polled + poll_timeout, api.until)
    while True:
        got = api.parsed(api.call("GET", f"{path}/{rollout_id}", expect=200), dict)
        if got.get("distributionSetId") not in (None, ds_id):  # getRollout
            raise api.fail(
                f"rollout {name!r} (id {rollout_id}) already exists for distribution"
                f" set {got.get('distributionSetId')}, not {ds_id}; choose another rollout name"
            )
        query = wanted.body.get("targetFilterQuery")
        if found and got.get("targetFilterQuery") not in (None, query):
            raise api.fail(
                f"rollout {name!r} (id {rollout_id}) already exists with the target filter"
                f" {got.get('targetFilterQuery')!r}, not {query!r}: the policy changed since"
                " this version was published; bump the version, or delete the rollout in hawkBit"
            )
        status = got.get("status")
        if status != "creating" or time.monotonic() > deadline:
            break
        time.sleep(min(poll_interval, max(deadline - time.monotonic(), 0.0)))
    if status == "ready" and wanted.start:
        api.call("POST", f"{path}/{rollout_id}/start", expect=200)  # start
        log.info("hawkBit: started rollout %s", name)
    elif status == "ready":
        log.info("hawkBit: rollout %s waits for its first wave's manual approval: start it", name)
    elif status in ("creating", "error_creating", "error_starting", None):
        raise api.fail(
            f"rollout {name!r} (id {rollout_id}) is {status!r}, not 'ready', after"
            f" {time.monotonic() - polled:.1f}s; check it in hawkBit, then publish again"
        )
