"""The README's main command: the demo runs the whole story on a continuous fleet (QEMU
devices and simulated ones), and stops what it started.

With ``AJOUR_UPDATE_SCREENSHOTS=1``, ``test_demo_screenshots`` runs the demo once more and
writes docs/img/demo-rollout-paused.png (the console's rollout page while the bad version
is paused) and docs/img/demo-overview.png, demo-rollout.png (after the story).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

DEMO = [sys.executable, str(REPO / "scripts" / "demo.py"), "--runner", "container"]
SHOTS = REPO / "docs" / "img"


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    work = tmp_path / "demo"
    result = subprocess.run(
        [*DEMO, "--exit", "--workdir", str(work), "--json", str(summary)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "refused: application 'rogue' is not on the build allowlist" in out
    assert "remote: ajour: 202 1 build(s) queued" in out  # the git hook fired the webhook
    facts: dict[str, Any] = json.loads(summary.read_text())
    good, bad, fix = facts["rollouts"]
    assert [r["version"] for r in facts["rollouts"]] == ["1.1.0", "1.2.0", "1.2.1"]

    # 1.1.0 went out wave by wave, every wave confirmed, each opening after the last's dwell
    waves = good["report"]["waves"]
    assert good["report"]["state"] == "completed" and len(waves) == 4
    assert all(w["outcomes"].get("confirmed") == w["devices"] for w in waves)
    opened = [w["openedAt"] for w in waves]
    assert all(b - a >= 3 for a, b in itertools.pairwise(opened)), opened

    # the bad 1.2.0 reverted on the canaries and paused the rollout by itself, wave 1 only
    assert re.fullmatch(
        r"wave 1: (\d+) of \1 finished devices reverted \(100%\) >= threshold 50%"
        r" with min_finished 3",
        facts["pauseReason"],
    ), facts["pauseReason"]
    assert f"rollout 3 paused: {facts['pauseReason']}" in " ".join(out.split())
    assert bad["report"]["state"] == "superseded"  # by the fix
    canary = bad["report"]["waves"][0]
    opened_bad = [w["openedAt"] is not None for w in bad["report"]["waves"]]
    assert opened_bad == [True, False, False, False]  # the pause kept waves 2-4 shut
    assert {k: n for k, n in canary["outcomes"].items() if n} == {"reverted": 8}
    held = [*(f"qemu-{i}" for i in range(3)), *(f"sim-00{i}" for i in range(5))]
    assert canary["heldBack"] == held  # 3 QEMU and 5 simulated canaries

    # the fix reached every device, by delta patch
    assert fix["report"]["state"] == "completed"
    assert fix["report"]["fromVersion"] == "1.1.0"
    assert facts["devices"] == dict.fromkeys(facts["devices"], "1.2.1")
    assert len(facts["devices"]) == 203
    assert fix["bytes"]["simulatedImageBytes"] == 0
    assert [r["bytes"]["simulatedSwaps"] for r in (good, bad, fix)] == [200, 5, 200]
    assert 0 < fix["bytes"]["simulatedPatchBytes"] * 20 < 200 * facts["imageBytes"]
    assert good["bytes"]["simulatedImageBytes"] == 200 * facts["imageBytes"]  # by full image
    assert "the fix went out by delta patch" in out

    # the QEMU devices: 1.1.0 confirmed, 1.2.0 reverted by the bootloader, 1.2.1 confirmed
    for name, lines in facts["qemuBoots"].items():
        story = [line for line in lines if "swapped in" in line or "app: confirmed" in line]
        assert story == [
            "boot: slot B 1.1.0+0 swapped in, on trial",
            "app: confirmed",
            "boot: slot B 1.2.0+0 swapped in, on trial",
            "boot: slot B 1.2.1+0 swapped in, on trial",
            "app: confirmed",
        ], (name, lines)
        assert "boot: the update on trial was not confirmed: reverted" in lines, lines

    # every image is MCUboot-signed with the demo's image key (its ED25519 TLV verifies with
    # the public half), and the QEMU bootloaders, built with that public half, checked the
    # signature of each image they booted (a bootloader without a key says "SHA-256 ok")
    assert facts["imagesSigned"] == ["1.0.0", "1.1.0", "1.2.0", "1.2.1"]
    for name, checks in facts["qemuChecks"].items():
        booted = [line.split()[3] for line in checks]
        assert booted == ["1.0.0+0", "1.1.0+0", "1.2.0+0", "1.2.1+0"], (name, checks)
        for line in checks:
            assert re.fullmatch(r"boot: slot A \S+ \(\d+ bytes, SHA-256 and ED25519 ok\)", line)
    assert (
        "MCUboot images signed with the image key (ED25519): 1.0.0, 1.1.0, 1.2.0, 1.2.1;"
        " the QEMU bootloaders booted 1.0.0+0, 1.1.0+0, 1.2.0+0, 1.2.1+0, each checked:"
        " SHA-256 and ED25519 ok"
    ) in " ".join(out.split())
    # the service read both keys from ajour.yaml's signing section at start, and logged only
    # their SHA-256 prefix
    service_log = (work / "logs" / "build-console.log").read_text()
    for line in (
        r"builds get the image key from signing\.image_key in \S+/fleet/ajour\.yaml",
        r"publishes are signed with the key \S+/keys/sign\.key",
    ):
        assert re.search(line + r" \(sha256 [0-9a-f]{12}\)", service_log), service_log
    assert "PRIVATE KEY" not in service_log

    # every published version is signed (a cosign .sig tag), as the worker's trust demands
    tags = json.loads((work / "oci" / "thermostat" / "index.json").read_text())
    names = {m["annotations"]["org.opencontainers.image.ref.name"] for m in tags["manifests"]}
    assert {"1.0.0", "1.1.0", "1.2.0", "1.2.1"} <= names
    assert sum(n.endswith(".sig") for n in names) >= 4, names
    assert "Console: http://127.0.0.1:" in out and "stopped the build service" in out
    assert "stopped the devices" in out


@pytest.mark.slow
def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path) -> None:
    """Interrupted while the fleet polls: the QEMU devices, the service and the worker stop."""
    work = tmp_path / "demo"
    proc = subprocess.Popen(
        [*DEMO, "--exit", "--workdir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 300
    while "simulated ones poll" not in seen:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the demo never started the fleet:\n{seen}")
        seen += line
    ports = [int(p) for p in re.findall(r"ready at http://127\.0\.0\.1:(\d+)", seen)]
    assert len(ports) == 2
    deadline = time.monotonic() + 30
    while not qemu_processes(work):  # a device is powered on every 2 s: interrupt it
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no QEMU device powered on within 30 s")
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, seen + rest
    assert "stopped the devices" in rest
    assert "stopped the build service and console" in rest
    assert "stopped the delivery worker" in rest
    assert qemu_processes(work) == []
    for port in ports:  # nothing listens any more
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0


def qemu_processes(work: Path) -> list[int]:
    """QEMU processes running in the demo's device folders."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(proc / "cwd").resolve().is_relative_to(work):
                if b"qemu-system-arm" in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("AJOUR_UPDATE_SCREENSHOTS") != "1", reason="AJOUR_UPDATE_SCREENSHOTS=1 only"
)
def test_demo_screenshots(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    proc = subprocess.Popen(
        [*DEMO, "--serve", "--workdir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = ""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            for marker, shots in (
                ("rollout 3 paused", {"rollout-paused": "/rollouts/thermostat"}),
                ("Press Ctrl-C", {"overview": "/", "rollout": "/rollouts/thermostat"}),
            ):
                while marker not in seen:
                    line = proc.stdout.readline()
                    assert line, seen
                    seen += line
                base = re.findall(r"console ready at (http://127\.0\.0\.1:\d+)", seen)[0]
                for name, path in shots.items():
                    page.goto(base + path)
                    # the rollout pages list every device: their top is the story
                    page.screenshot(
                        path=str(SHOTS / f"demo-{name}.png"), full_page=name == "overview"
                    )
        finally:
            browser.close()
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
