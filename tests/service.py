"""The build service on loopback for tests: real uvicorn, real git remote, signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git
import httpx
import uvicorn

from ajour_build.config import InstallationConfig, load_config
from ajour_build.server import assemble, create_app
from ajour_build.service.state import Service
from ajour_build.settings import LocalSettings
from tests.registry import free_port

SECRET = "hook-secret-1"
TOKEN = "api-token-1"
# a host-mode builder: writes firmware whose bytes depend on the commit and the version;
# a file named "delay" in the repository makes it take that many seconds
BUILDER = """\
delay=$(cat delay 2>/dev/null || echo 0)
echo "building $AJOUR_FIRMWARE_VERSION at $AJOUR_SOURCE_COMMIT"
i=0
while [ "$i" -lt "$delay" ]; do sleep 1; i=$((i + 1)); echo "tick $i"; done
mkdir -p "$(dirname "$AJOUR_ARTIFACT_PATH")"
printf 'fw %s %s' "$AJOUR_FIRMWARE_VERSION" "$AJOUR_SOURCE_COMMIT" > "$AJOUR_ARTIFACT_PATH"
echo done
"""


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread; yield its base URL once /healthz answers."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the build service did not start")
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


@dataclass
class Harness:
    """A fleet whose source is a real bare git remote, and the service building it."""

    root: Path
    config_text: str
    remote: git.Repo = field(init=False)
    work: git.Repo = field(init=False)
    builders: Path | None = None  # the builder catalog; default: root/builders
    url: str = ""
    service: Service | None = None

    def __post_init__(self) -> None:
        self.remote = git.Repo.init(self.root / "remote.git", bare=True, initial_branch="main")
        self.work = git.Repo.clone_from(str(self.root / "remote.git"), self.root / "work")
        with self.work.config_writer() as cfg:
            cfg.set_value("user", "name", "Dev")
            cfg.set_value("user", "email", "dev@ajour.invalid")

    @property
    def remote_uri(self) -> str:
        return f"file://{self.root / 'remote.git'}"

    def commit(self, files: dict[str, str], branch: str = "main") -> tuple[str, str]:
        """Commit ``files`` and push to ``branch``; return (before, after)."""
        try:
            before = self.remote.commit(branch).hexsha
        except (git.BadName, ValueError):
            before = "0" * 40
        for name, text in files.items():
            path = Path(self.work.working_tree_dir or ".") / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            self.work.index.add([name])
        after = self.work.index.commit(f"change {', '.join(files)}").hexsha
        self.work.git.push("origin", f"HEAD:refs/heads/{branch}")
        self.work.close()  # no persistent git processes (and their pipes) outlive the call
        self.remote.close()
        return before, after

    def config(self) -> InstallationConfig:
        path = self.root / "fleet" / "ajour.yaml"
        path.write_text(self.config_text)
        return load_config(path, env={})

    @contextmanager
    def running(self, open_access: bool = False) -> Iterator[str]:
        builders = self.builders or self.root / "builders"
        settings = LocalSettings(state_dir=self.root / "state", builders_dir=builders)
        self.service = assemble(
            [self.root / "fleet"], self.config(), settings, builders, open_access
        )
        with serve(create_app(self.service)) as url:
            self.url = url
            yield url

    # -- requests ------------------------------------------------------------------------
    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def github(
        self,
        payload: dict[str, Any],
        secret: str = SECRET,
        delivery: str | None = None,
        event: str = "push",
        body: bytes | None = None,
    ) -> httpx.Response:
        raw = body if body is not None else json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
            "User-Agent": "GitHub-Hookshot/test",
        }
        with httpx.Client(base_url=self.url, timeout=30) as c:
            return c.post("/webhooks/github", content=raw, headers=headers)

    def wait(self, build_id: str, states: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
        """Poll the API until the build is in one of ``states``."""
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                build: dict[str, Any] = c.get(f"/api/v1/builds/{build_id}").json()
                if build["state"] in states:
                    return build
                if time.monotonic() > deadline:
                    raise AssertionError(f"build {build_id} stuck in {build['state']}: {build}")
                time.sleep(0.1)

    def wait_log(self, build_id: str, text: str, timeout: float = 30) -> str:
        """Poll the build's log (while it runs) until ``text`` appears in it."""
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                log = c.get(f"/api/v1/builds/{build_id}/logs").text
                if text in log:
                    return log
                if time.monotonic() > deadline:
                    raise AssertionError(f"{text!r} not in the log of {build_id}:\n{log}")
                time.sleep(0.1)


def github_push(uri: str, ref: str, before: str, after: str) -> dict[str, Any]:
    """The shape GitHub sends for a push (fields Ajour reads, and the usual others)."""
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "created": before == "0" * 40,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"{uri}/compare/{before[:12]}...{after[:12]}",
        "commits": [{"id": after, "message": "change", "distinct": True}],
        "head_commit": {"id": after, "message": "change"},
        "repository": {
            "id": 1,
            "name": "firmware",
            "full_name": "acme/firmware",
            "html_url": uri,
            "clone_url": uri,
            "ssh_url": uri,
            "default_branch": "main",
        },
        "pusher": {"name": "dev", "email": "dev@ajour.invalid"},
        "sender": {"login": "dev"},
    }


def gitlab_push(uri: str, ref: str, before: str, after: str) -> dict[str, Any]:
    """The shape GitLab sends for a Push Hook."""
    return {
        "object_kind": "push",
        "event_name": "push",
        "before": before,
        "after": after,
        "ref": ref,
        "checkout_sha": after,
        "user_username": "dev",
        "project": {
            "id": 7,
            "name": "firmware",
            "path_with_namespace": "acme/firmware",
            "git_http_url": uri,
            "git_ssh_url": uri,
            "default_branch": "main",
        },
        "commits": [{"id": after, "message": "change"}],
        "total_commits_count": 1,
        "repository": {"name": "firmware", "url": uri, "git_http_url": uri},
    }
