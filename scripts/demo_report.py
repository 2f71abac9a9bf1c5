"""The demo's summary: per rollout and wave what the devices did, the bytes they moved, and
where to look next."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from demo import Demo


def summary(demo: Demo, facts: dict[str, Any]) -> None:
    console = demo.console
    console.rule("summary")
    waves = Table(
        "rollout", "state", "wave", "opened", "devices", "confirmed", "reverted", "failed"
    )  # fmt: skip
    for entry in facts["rollouts"]:
        report = entry["report"]
        label = f"{report.get('seq')}: {report.get('fromVersion')} → {report.get('toVersion')}"
        state = report.get("state", "?")
        first = (report.get("waves") or [{}])[0].get("openedAt")
        for wave in report.get("waves", []):
            outcomes = wave.get("outcomes", {})
            failed = outcomes.get("failed_download", 0) + outcomes.get("timed_out", 0)
            opened = wave.get("openedAt")
            waves.add_row(
                label, state, "1 (canary)" if wave["number"] == 1 else str(wave["number"]),
                f"+{opened - first:.1f}s" if opened and first else "not opened",
                str(wave["devices"]), str(outcomes.get("confirmed", 0)),
                str(outcomes.get("reverted", 0)), str(failed),
            )  # fmt: skip
            label = state = ""
    console.print(waves)
    if facts.get("pauseReason"):
        console.print(f"rollout 3 paused by itself: [bold]{facts['pauseReason']}[/]")
    size = facts["imageBytes"]
    wire = Table(
        "push", "took", "image bytes", "patch bytes", "by full image", "QEMU wire bytes"
    )  # fmt: skip
    for entry in facts["rollouts"]:
        b = entry["bytes"]
        full = b["simulatedSwaps"] * size
        wire.add_row(
            f"{entry['version']} ({entry['kind']})", f"{entry['seconds']}s",
            f"{b['simulatedImageBytes']:,}", f"{b['simulatedPatchBytes']:,}",
            f"{b['simulatedSwaps']} x {size:,} = {full:,}", f"{b['qemuWireBytes']:,}",
        )  # fmt: skip
    console.print(wire)
    console.print(
        "[dim]image and patch bytes: what the simulated devices received (Write and"
        " WritePatch data); by full image: their swaps times the image's size; QEMU wire"
        " bytes: statuses and commands through the 3 gateways.[/]"
    )
    fix = facts["rollouts"][-1]["bytes"]
    if fix["simulatedPatchBytes"]:
        ratio = fix["simulatedSwaps"] * size / fix["simulatedPatchBytes"]
        console.print(
            f"the fix went out by delta patch: {fix['simulatedPatchBytes']:,} bytes for"
            f" {fix['simulatedSwaps']} simulated devices, {ratio:.0f}x fewer than full images"
        )
    booted = sorted({line.split()[3] for lines in facts["qemuChecks"].values() for line in lines})
    checked = {
        line.rsplit(", ", 1)[-1].rstrip(")")
        for lines in facts["qemuChecks"].values()
        for line in lines
    }
    console.print(
        f"MCUboot images signed with the image key (ED25519): {', '.join(facts['imagesSigned'])};"
        f" the QEMU bootloaders booted {', '.join(booted)}, each checked: {', '.join(checked)}"
    )
    versions: dict[str, int] = {}
    for version in facts["devices"].values():
        versions[version] = versions.get(version, 0) + 1
    console.print(f"devices per version: {versions}")
    console.print(
        f"Console: {demo.service_url}/  rollout: {demo.service_url}/rollouts/thermostat"
        f"  (read-only views are open; to operate, log in with the token in"
        f" {demo.work / 'console-token'})"
        f"\nREST API: {demo.service_url}/docs    delivery worker: {demo.delivery_url}/v1/rollouts"
        f"\nFirmware (OCI layout): {demo.layout}/thermostat   build records: {demo.state}"
        f"\nLogs of the service and the worker: {demo.work / 'logs'};"
        f" QEMU consoles: {demo.work / 'qemu'}"
        f"\ndone in {facts['seconds']:.1f}s"
    )
