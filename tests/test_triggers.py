"""render --triggers: Tekton Triggers for the in-cluster git-push route."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from click.testing import CliRunner

from ajour_build.cli import main
from tests.conftest import EXAMPLES
from tests.test_render import shared_validator
from tests.test_webhooks import github_payload, gitlab_payload


def rendered() -> list[dict[str, Any]]:
    result = CliRunner().invoke(main, ["render", str(EXAMPLES / "fleet"), "--stdout", "--triggers"])
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(result.stdout))


def test_kinds_and_wiring() -> None:
    docs = rendered()
    kinds = [d["kind"] for d in docs]
    assert kinds.count("PipelineRun") == 4 and kinds.count("TriggerTemplate") == 4
    assert kinds.count("TriggerBinding") == 2 and kinds.count("EventListener") == 1
    templates = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TriggerTemplate"}
    bindings = {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerBinding"}
    (listener,) = [d for d in docs if d["kind"] == "EventListener"]
    assert len(listener["spec"]["triggers"]) == 8
    for trigger in listener["spec"]["triggers"]:
        assert trigger["template"]["ref"] in templates
        assert {b["ref"] for b in trigger["bindings"]} <= bindings
        provider = trigger["interceptors"][0]["ref"]["name"]
        assert provider in ("github", "gitlab")
        assert trigger["interceptors"][1]["ref"]["name"] == "cel"
    for doc in docs:
        name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert '"script":' not in json.dumps(docs), "no step scripts anywhere"


def test_trigger_templates_embed_valid_v1_pipelineruns() -> None:
    validator = shared_validator("PipelineRun")
    for doc in rendered():
        if doc["kind"] != "TriggerTemplate":
            continue
        assert [p["name"] for p in doc["spec"]["params"]] == ["git-revision"]
        (run,) = doc["spec"]["resourcetemplates"]
        assert run["metadata"]["generateName"].endswith("-") and "name" not in run["metadata"]
        params = {p["name"]: p["value"] for p in run["spec"]["params"]}
        assert params["git-revision"] == "$(tt.params.git-revision)"
        assert [e.message for e in validator.iter_errors(run)] == []


def test_cel_filters_accept_the_urls_providers_send() -> None:
    """The firmware repo of examples/fleet, as GitHub and GitLab name it in their payloads."""
    docs = rendered()
    (listener,) = [d for d in docs if d["kind"] == "EventListener"]
    blinky = [t for t in listener["spec"]["triggers"] if t["name"].startswith("ajour-blinky-")]
    github = github_payload("refs/heads/main", "a" * 40, "b" * 40)
    gitlab = gitlab_payload("refs/heads/main", "a" * 40, "b" * 40)
    for trigger in blinky:
        cel = trigger["interceptors"][1]["params"][0]["value"]
        payload = github if trigger["name"].endswith("-github") else gitlab
        urls = (
            [payload["repository"]["clone_url"], payload["repository"]["ssh_url"]]
            if "github" in trigger["name"]
            else [payload["project"]["git_http_url"], payload["project"]["git_ssh_url"]]
        )
        spellings = json.loads(cel.split(" in ", 1)[1].split("]", 1)[0] + "]")
        if 'refs/heads/main"' in cel:
            assert set(urls) & set(spellings), (urls, spellings)
