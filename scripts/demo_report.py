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
    waves = Table("rollout", "state", "wave", "devices", "confirmed", "reverted", "other")
    for entry in facts["rollouts"]:
        report = entry["report"]
        label = f"{report.get('seq')}: {report.get('fromVersion')} → {report.get('toVersion')}"
        for wave in report.get("waves", []):
            outcomes = dict(wave.get("outcomes", {}))
            confirmed, back = outcomes.pop("confirmed", 0), outcomes.pop("reverted", 0)
            other = ", ".join(f"{k} {v}" for k, v in outcomes.items() if v) or "-"
            name = "canary" if wave["number"] == 1 else f"{wave['number']}"
            opened = "" if wave.get("open") else " (not opened)"
            waves.add_row(
                label, report.get("state", "?"), name + opened, str(wave["devices"]),
                str(confirmed), str(back), other,
            )  # fmt: skip
            label = ""
        if report.get("reason") and report.get("state") != "completed":
            waves.add_row("", "", f"[dim]{report['reason']}[/]", "", "", "", "")
    console.print(waves)
    size = facts["imageBytes"]
    wire = Table("push", "took", "image bytes", "patch bytes", "QEMU wire bytes", "full images")
    for entry in facts["rollouts"]:
        b, updated = entry["bytes"], updates(entry)
        wire.add_row(
            f"{entry['version']} ({entry['kind']})", f"{entry['seconds']}s",
            f"{b['simulatedImageBytes']:,}", f"{b['simulatedPatchBytes']:,}",
            f"{b['qemuWireBytes']:,}", f"{updated} x {size:,} = {updated * size:,}",
        )  # fmt: skip
    console.print(wire)
    console.print(
        "[dim]image and patch bytes: what the simulated devices received (Write / WritePatch"
        " data); QEMU wire bytes: statuses and commands through the gateways; full images:"
        " what the same updates cost by whole image.[/]"
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


def updates(entry: dict[str, Any]) -> int:
    """Devices that swapped to the rollout's version (confirmed or reverted)."""
    total = 0
    for wave in entry["report"].get("waves", []):
        outcomes = wave.get("outcomes", {})
        total += outcomes.get("confirmed", 0) + outcomes.get("reverted", 0)
    return total
