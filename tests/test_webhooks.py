"""Push webhooks: real git pushes, payloads shaped and signed as GitHub/GitLab/Gitea send them."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import git
import pytest

from ajour_build.config import load_config
from ajour_build.core.fleet import load_fleet
from ajour_build.push import match, repo_key
from ajour_build.service.webhooks import WebhookError, parse, verify
from tests.service import github_push, gitlab_push

SECRET = "s3cret-hook"
FLEET = """\
kind: Application
metadata: {name: fw-main}
spec:
  firmware:
    container:
      image: fw:main
      build:
        image: b:1
        source: {git: {uri: "https://GIT.example.com/acme/firmware.git", project: app, rev: main}}
---
metadata: {name: d1, application: fw-main}
---
metadata: {name: d2, application: fw-main}
spec:
  firmware:
    container:
      image: fw:release
      build:
        image: b:1
        source: {git: {uri: "git@git.example.com:acme/firmware.git", project: app, rev: release}}
---
kind: Application
metadata: {name: other}
spec:
  firmware:
    container:
      image: other:main
      build:
        image: b:1
        source: {git: {uri: "https://git.example.com/acme/other", rev: main}}
---
kind: Application
metadata: {name: rogue}
spec:
  firmware:
    container:
      image: rogue:main
      build:
        image: b:1
        source: {git: {uri: "ssh://git@git.example.com/acme/firmware", rev: main}}
"""


def real_push(tmp_path: Path, branch: str) -> tuple[str, str]:
    """Commit and push to a real bare remote; return (before, after)."""
    remote = git.Repo.init(tmp_path / "remote.git", bare=True)
    work = git.Repo.clone_from(str(remote.git_dir), tmp_path / "work")
    with work.config_writer() as cfg:
        cfg.set_value("user", "name", "Dev")
        cfg.set_value("user", "email", "dev@ajour.invalid")
    (tmp_path / "work" / "main.c").write_text("int main(void) { return 0; }\n")
    work.index.add(["main.c"])
    first = work.index.commit("first")
    work.git.push("origin", f"HEAD:refs/heads/{branch}")
    (tmp_path / "work" / "main.c").write_text("int main(void) { return 1; }\n")
    work.index.add(["main.c"])
    second = work.index.commit("second")
    work.git.push("origin", f"HEAD:refs/heads/{branch}")
    assert remote.commit(branch).hexsha == second.hexsha
    return first.hexsha, second.hexsha


HTTPS = "https://git.example.com/acme/firmware"
SSH = "git@git.example.com:acme/firmware.git"


def github_payload(ref: str, before: str, after: str) -> dict[str, Any]:
    """GitHub's push shape (tests/service.py) with the several URLs GitHub names."""
    payload = github_push(HTTPS, ref, before, after)
    payload["repository"].update(
        clone_url=f"{HTTPS}.git", ssh_url=SSH, git_url="git://git.example.com/acme/firmware.git"
    )
    return payload


def gitlab_payload(ref: str, before: str, after: str) -> dict[str, Any]:
    """GitLab's Push Hook shape (tests/service.py) with its HTTP and SSH URLs."""
    payload = gitlab_push(f"{HTTPS}.git", ref, before, after)
    payload["project"].update(git_ssh_url=SSH, web_url=HTTPS)
    payload["repository"]["url"] = SSH
    return payload


def sign_github(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={digest}"}


@pytest.fixture
def fleet_and_config(tmp_path: Path) -> tuple[Any, Any]:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    config = load_config(
        None,
        env={
            "AJOUR_ALLOWED_APPLICATIONS": '["fw-main", "other"]',
            "AJOUR_PUBLISH_REPOSITORIES": '{"fw-main": ["fw"]}',
        },
    )
    return load_fleet([tmp_path / "fleet"]), config


def test_github_push_triggers_every_matching_build(tmp_path: Path, fleet_and_config: Any) -> None:
    fleet, config = fleet_and_config
    before, after = real_push(tmp_path, "main")
    body = json.dumps(github_payload("refs/heads/main", before, after)).encode()
    verify("github", SECRET, body, sign_github(body))
    push = parse("github", "push", body)
    assert push is not None and push.name == "main" and push.after == after
    matched = match(fleet, config, push)
    # fw-main and its device d1 share one build; d2 follows `release`; `other` is another repo
    assert [(b.application, [str(c) for c in b.consumers]) for b in matched.builds] == [
        ("fw-main", ["fw-main", "fw-main/d1"])
    ]
    (refusal,) = matched.refused
    assert "application 'rogue' is not on the build allowlist" in refusal


def test_gitlab_and_gitea_pushes(tmp_path: Path, fleet_and_config: Any) -> None:
    fleet, config = fleet_and_config
    before, after = real_push(tmp_path, "release")
    body = json.dumps(gitlab_payload("refs/heads/release", before, after)).encode()
    verify("gitlab", SECRET, body, {"X-Gitlab-Token": SECRET})
    push = parse("gitlab", "Push Hook", body)
    assert push is not None
    matched = match(fleet, config, push)
    assert [str(c) for b in matched.builds for c in b.consumers] == ["fw-main/d2"]
    gitea = json.dumps(github_payload("refs/heads/release", before, after)).encode()
    signature = hmac.new(SECRET.encode(), gitea, hashlib.sha256).hexdigest()
    verify("gitea", SECRET, gitea, {"X-Gitea-Signature": signature})
    gitea_push = parse("gitea", "push", gitea)
    assert gitea_push is not None and match(fleet, config, gitea_push).builds == matched.builds


@pytest.mark.parametrize(
    ("provider", "headers", "status", "message"),
    [
        ("github", {}, 401, "X-Hub-Signature-256 is missing"),
        ("github", {"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401, "does not match"),
        ("gitlab", {"X-Gitlab-Token": "wrong"}, 401, "does not match"),
        ("gitea", {"X-Gitea-Signature": "00"}, 401, "does not match"),
        ("bitbucket", {}, 404, "unknown webhook provider"),
    ],
)
def test_bad_signatures_are_refused(
    provider: str, headers: dict[str, str], status: int, message: str
) -> None:
    with pytest.raises(WebhookError) as info:
        verify(provider, SECRET, b'{"ref": "refs/heads/main"}', headers)
    assert info.value.status == status and message in str(info.value)
    assert SECRET not in str(info.value)


def test_altered_body_fails_the_signature() -> None:
    body = json.dumps(github_payload("refs/heads/main", "a" * 40, "b" * 40)).encode()
    headers = sign_github(body)
    with pytest.raises(WebhookError, match="does not match"):
        verify("github", SECRET, body.replace(b"main", b"evil"), headers)


def test_ping_and_no_match_and_deleted_branch(fleet_and_config: Any) -> None:
    fleet, config = fleet_and_config
    assert parse("github", "ping", b'{"zen": "Keep it logically awesome."}') is None
    other = github_payload("refs/heads/feature", "a" * 40, "b" * 40)
    push = parse("github", "push", json.dumps(other).encode())
    assert push is not None and match(fleet, config, push).builds == ()
    deleted = {**github_payload("refs/heads/main", "a" * 40, "0" * 40), "deleted": True}
    gone = parse("github", "push", json.dumps(deleted).encode())
    assert gone is not None and gone.deleted and match(fleet, config, gone).builds == ()
    with pytest.raises(WebhookError, match="not JSON"):
        parse("github", "push", b"<html>")
    with pytest.raises(WebhookError, match="no ref"):
        parse("github", "push", b"{}")


@pytest.mark.parametrize(
    "uri",
    [
        "https://git.example.com/acme/firmware",
        "https://GIT.EXAMPLE.COM/acme/firmware.git/",
        "git@git.example.com:acme/firmware.git",
        "ssh://git@git.example.com/acme/firmware.git",
    ],
)
def test_repository_normalisation(uri: str) -> None:
    assert repo_key(uri) == "git.example.com/acme/firmware"
