"""The demo's story, push by push, with the continuous fleet running under it.

Each step waits for what it shows (a build's end, a rollout's state, every device on a
version), bounded by ``WAIT`` seconds, and records what it measured in ``facts``: the
rollouts' per-wave outcomes, the bytes the devices received and sent, and the times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from demo_fleet import QemuFleet, SimulatedFleet
from demo_parts import APP_NAME, Processes, push, read

if TYPE_CHECKING:
    from demo import Demo

SIMULATED = 200
WAIT = 240.0  # seconds any one step may take before the demo gives up
APP_C = "device/boot/app/device.c"
GOOD = "#if !APP_CONFIRM\n"
BAD = "#if 1 /* bad: the APP_CONFIRM=0 path, resets on trial and never confirms */\n"


def until(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """``check()``'s first truthy answer, polled; SystemExit naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise SystemExit(f"the demo gave up waiting {timeout:g}s for {what}")
        time.sleep(0.25)


class Watch:
    """What the worker says: rollouts and device versions."""

    def __init__(self, demo: Demo, sims: SimulatedFleet) -> None:
        self.demo, self.sims = demo, sims

    def rollout(self) -> dict[str, Any]:
        with self.demo.worker() as c:
            reply = c.get(f"/v1/rollouts/{APP_NAME}")
        return reply.json() if reply.status_code == 200 else {}

    def history(self) -> list[dict[str, Any]]:
        with self.demo.worker() as c:
            reply = c.get(f"/v1/rollouts/{APP_NAME}", params={"history": "1"})
        answer = reply.json() if reply.status_code == 200 else []
        return answer if isinstance(answer, list) else [answer]

    def qemu_versions(self) -> dict[str, str]:
        with self.demo.worker() as c:
            rows = c.get(f"/v1/status/{APP_NAME}").json()
        return {r["device"]: r.get("current", "") for r in rows if r["device"] in self.demo.qemu}

    def versions(self) -> dict[str, str]:
        return {**self.sims.versions(), **self.qemu_versions()}

    def all_on(self, version: str) -> bool:
        versions = self.versions()
        return len(versions) == len(self.sims.devices) + len(self.demo.qemu) and all(
            v == version for v in versions.values()
        )

    def state(self, seq: int, *states: str) -> dict[str, Any] | None:
        now = self.rollout()
        return now if now.get("seq") == seq and now.get("state") in states else None


def meter(sims: SimulatedFleet, qemu: QemuFleet) -> dict[str, int]:
    devices = sims.devices.values()
    return {
        "simulatedImageBytes": sum(d.bytes_received - d.patch_bytes for d in devices),
        "simulatedPatchBytes": sum(d.patch_bytes for d in devices),
        "simulatedWireBytes": sum(d.wire_bytes for d in devices),
        "simulatedSwaps": sum(d.swaps for d in devices),
        "qemuWireBytes": qemu.wire_bytes(),
    }


def since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


@contextmanager
def story(demo: Demo, procs: Processes) -> Iterator[dict[str, Any]]:
    console = demo.console
    demo.specs()
    bare = demo.setup(procs)
    console.rule("3. push 1.0.0 → webhook → build → sign → publish; the fleet starts")
    demo.refuse()
    first = demo.build(
        "push 1.0.0", push(bare, demo.work, {"VERSION": "1.0.0\n"}, console, "1.0.0")
    )
    image = demo.image(first)
    started = time.perf_counter()
    qemu = QemuFleet(
        demo.work / "qemu", demo.delivery_url, APP_NAME, demo.qemu, image, demo.boot_pubkey
    )
    sims = SimulatedFleet(
        demo.delivery_url, APP_NAME, demo.simulated, "1.0.0", image, bad={"1.2.0"}
    )
    qemu.start()
    sims.start()
    try:
        watch = Watch(demo, sims)
        until("every device on 1.0.0", lambda: watch.all_on("1.0.0"))
        console.print(
            f"[green]ok[/] {len(demo.qemu)} QEMU devices (bootloader + updater, gateways) and"
            f" {len(demo.simulated)} simulated ones poll on 1.0.0"
            f" [dim]({time.perf_counter() - started:.1f}s)[/]"
        )
        first = until("the QEMU bootloaders' check", lambda: qemu.checks(demo.qemu[0]))
        console.print(f"  their bootloaders (built with the image key's public half): {first[0]}")
        facts: dict[str, Any] = {"imageBytes": len(image), "rollouts": [], "devices": {}}
        steps = [
            ("4. push 1.1.0: the staged rollout, canaries first", "1.1.0", None, "good"),
            ("5. push a bad 1.2.0: the canaries revert", "1.2.0", BAD, "bad"),
            ("6. push the one-line fix as 1.2.1: by delta patch", "1.2.1", GOOD, "fix"),
        ]
        for seq, (title, version, line, kind) in enumerate(steps, start=2):
            console.rule(title)
            files = {"VERSION": f"{version}\n"}
            if line is not None:
                files[APP_C] = swap_line(read(demo.work, APP_C), line)
            before, t0 = meter(sims, qemu), time.perf_counter()
            message = {"good": "1.1.0", "bad": "1.2.0: skip the confirm", "fix": "1.2.1: fix"}
            demo.build(f"push {version}", push(bare, demo.work, files, console, message[kind]))
            if kind == "bad":
                report = until(f"rollout {seq} to pause", partial(watch.state, seq, "paused"))
                console.print(f"  rollout {seq} [bold red]paused[/]: {report['reason']}")
                facts["pauseReason"] = report["reason"]
                until("the QEMU canaries to revert", partial(reverted, watch, seq, demo.qemu))
                console.print("  the QEMU canaries reverted (their bootloader booted 1.1.0 again)")
                # the pause came from the first canaries to finish; the meter waits for all
                until("every canary to revert", partial(canaries_done, watch, seq))
            else:
                until(f"rollout {seq} to complete", partial(watch.state, seq, "completed"))
                until(f"every device on {version}", partial(watch.all_on, version))
                console.print(f"  rollout {seq} completed: every device runs {version}")
            facts["rollouts"].append(
                {
                    "seq": seq,
                    "version": version,
                    "kind": kind,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "bytes": since(before, meter(sims, qemu)),
                }
            )
        reports = {r["seq"]: r for r in watch.history()}
        for entry in facts["rollouts"]:
            entry["report"] = reports.get(entry["seq"], {})
        facts["devices"] = watch.versions()
        facts["qemuBoots"] = {n: qemu.story(n) for n in demo.qemu}
        facts["qemuChecks"] = {n: qemu.checks(n) for n in demo.qemu}
        facts["imagesSigned"] = [b["version"] for b in demo.builds if b["imageSigned"]]
        facts["simulatedErrors"] = sims.errors
        yield facts
    finally:
        sims.stop()
        qemu.stop()
        console.print("[dim]stopped the devices[/]")


def swap_line(text: str, line: str) -> str:
    """``text`` with its ``#if …APP_CONFIRM`` line (the good one or the bad) replaced."""
    lines = text.splitlines(keepends=True)
    at = [i for i, old in enumerate(lines) if old in (GOOD, BAD)]
    if len(at) != 1:
        raise SystemExit(f"expected one APP_CONFIRM check in {APP_C}, found {len(at)}")
    lines[at[0]] = line
    return "".join(lines)


def reverted(watch: Watch, seq: int, names: list[str]) -> bool:
    with watch.demo.worker() as c:
        rows = c.get(f"/v1/status/{APP_NAME}").json()
    details = {r["device"]: r.get("detail", "") for r in rows}
    return all(f"rollout {seq}" in details.get(n, "") and "reverted" in details[n] for n in names)


def canaries_done(watch: Watch, seq: int) -> bool:
    """Whether every device of rollout ``seq``'s first wave has reverted, so no canary's
    swap lands in the next step's bytes."""
    now = watch.rollout()
    if now.get("seq") != seq or not now.get("waves"):
        return False
    first: dict[str, Any] = now["waves"][0]
    return (
        bool(first.get("devices")) and first.get("outcomes", {}).get("reverted") == first["devices"]
    )
