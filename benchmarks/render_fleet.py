"""The render benchmark's synthetic fleet: its generation rules and its spec files.

N devices across A applications, one multi-document YAML file per application (the
Application, then its Devices) plus an ``ajour.yaml`` allowing every application. The
builds a plan must find follow from the rules alone (:func:`expected_builds`), so the
benchmark checks the pipeline's result, not just its speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# Generation rules, by the device's index ``i`` in the whole fleet (0-based):
CHANNELS = ("canary", "beta", "rc", "lts")  # every 10th device: a shared per-app override
UNIQUE_EVERY, UNIQUE_AT = 100, 7  # i % 100 == 7: a spec of its own (pinned commit)
COPY_EVERY, COPY_AT = 100, 33  # i % 100 == 33: an explicit copy of the app's spec
HAWKBIT_EVERY, HAWKBIT_AT = 100, 55  # i % 100 == 55: hawkBit firmware, no build
CHANNEL_EVERY = 10  # i % 10 == 0: channel CHANNELS[(i // 10) % 4]

Variant = tuple[str, ...]  # ("base",) | ("channel", name) | ("unique", str(i)) | ("none",)


# --------------------------------------------------------------------------- generation


def device_variant(i: int) -> Variant:
    """Which firmware a device gets, from the generation rules alone."""
    if i % UNIQUE_EVERY == UNIQUE_AT:
        return ("unique", str(i))
    if i % HAWKBIT_EVERY == HAWKBIT_AT:
        return ("none",)
    if i % COPY_EVERY == COPY_AT:
        return ("base",)  # written out in full, but identical to the application's
    if i % CHANNEL_EVERY == 0:
        return ("channel", CHANNELS[(i // CHANNEL_EVERY) % len(CHANNELS)])
    return ("base",)


def app_name(a: int) -> str:
    return f"app-{a:04d}"


def firmware_spec(app: str, variant: Variant) -> dict[str, Any]:
    """The ``spec.firmware`` of an application (variant base) or of a device override."""
    kind = variant[0]
    if kind == "none":
        return {"hawkbit": {"controller": f"{app}-ctrl"}}
    rev, image, timeout = "main", f"{app}:latest", "20m"
    if kind == "channel":
        rev, image, timeout = f"release-{variant[1]}", f"{app}:{variant[1]}", "30m"
    elif kind == "unique":
        rev, image = f"{int(variant[1]):040x}", f"{app}:pin-{variant[1]}"
    return {
        "container": {
            "image": image,
            "build": {
                "image": "arm-gcc",
                "source": {
                    "git": {
                        "uri": "https://git.example.com/acme/firmware.git",
                        "project": f"apps/{app}",
                        "rev": rev,
                    }
                },
                "args": ["--board", "mps2-an385", "--app", app],
                "env": [
                    {"name": "OPTIMIZE", "value": "s"},
                    {"name": "FEATURES", "value": ["lora", "low-power"]},
                ],
                "artifact": {"path": f"build/{app}.bin"},
                "timeout": timeout,
            },
        }
    }


def devices_by_app(devices: int, apps: int) -> Iterator[tuple[int, list[int]]]:
    """Contiguous blocks of device indexes per application (sizes differ by at most one)."""
    base, extra = divmod(devices, apps)
    start = 0
    for a in range(apps):
        count = base + (1 if a < extra else 0)
        yield a, list(range(start, start + count))
        start += count


def expected_builds(devices: int, apps: int) -> tuple[int, int]:
    """(distinct builds, consumers without a build), from the generation rules only.

    Every application consumes its own (base) spec; a device consumes its variant. Each
    variant's spec differs from every other one in rev or image, and image names carry the
    application, so a build is exactly a distinct (application, variant) pair.
    """
    distinct: set[tuple[str, Variant]] = set()
    without = 0
    for a, indexes in devices_by_app(devices, apps):
        distinct.add((app_name(a), ("base",)))
        for i in indexes:
            variant = device_variant(i)
            if variant == ("none",):
                without += 1
            else:
                distinct.add((app_name(a), variant))
    return len(distinct), without


CONFIG_YAML = """\
registry:
  prefix: registry.example.com/ajour
allowed_applications: ["*"]
namespace: ajour
default_timeout: 30m
builders:
  arm-gcc:
    image: localhost/ajour/builder-arm-gcc:0.2.0
"""


def write_fleet(root: Path, devices: int, apps: int) -> list[Path]:
    """One ``<app>.yaml`` per application (Application, then its Devices) and ajour.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ajour.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    files: list[Path] = []
    for a, indexes in devices_by_app(devices, apps):
        app = app_name(a)
        docs: list[dict[str, Any]] = [
            {
                "kind": "Application",
                "metadata": {"name": app},
                "spec": {"firmware": firmware_spec(app, ("base",))},
            }
        ]
        for i in indexes:
            doc: dict[str, Any] = {
                "kind": "Device",
                "metadata": {"name": f"{app}-dev-{i:06d}", "application": app},
            }
            variant = device_variant(i)
            if variant != ("base",) or i % COPY_EVERY == COPY_AT:
                doc["spec"] = {"firmware": firmware_spec(app, variant)}
            docs.append(doc)
        path = root / f"{app}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
        files.append(path)
    return files
