"""Every ``--json`` output of both CLIs has camelCase keys, as the REST API has: one walk over
each command's JSON, run against real builds, layouts and a real worker."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import git
from click.testing import CliRunner

from ajour_build.cli import main as build_main
from ajour_build.core.casing import camel, camel_keys
from delivery.cli import main as delivery_main
from tests.conftest import EXAMPLES, REPO
from tests.firmware import fake_builder
from tests.http_wire import STATUS_TOKEN, serving, settings, small_worker

CAMEL = re.compile(r"[a-z][a-zA-Z0-9]*")
# maps whose keys are data, not field names: simulate's devices per version, OCI annotations
DATA_MAPS = {"versions", "annotations"}


def keys(data: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    """Every (place, key) of the JSON ``data``, recursively, except inside data maps."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield where, key
            if key not in DATA_MAPS:
                yield from keys(value, f"{where}.{key}")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from keys(value, f"{where}[{i}]")


def assert_camel(output: str, what: str) -> Any:
    data = json.loads(output)
    wrong = [f"{where}.{key}" for where, key in keys(data) if not CAMEL.fullmatch(key)]
    assert not wrong, f"{what}: keys not in camelCase: {wrong}"
    return data


def test_casing() -> None:
    assert [camel(n) for n in ("cache_key", "log_tail", "a_b_c", "x", "specHash", "sha256")] == [
        "cacheKey", "logTail", "aBC", "x", "specHash", "sha256"
    ]  # fmt: skip
    assert camel_keys({"a_b": [{"c_d": 1}], "e": ("f_g",)}) == {"aB": [{"cD": 1}], "e": ["f_g"]}
    kept = {"annotations": {"org.example.my_key": "v"}}
    assert camel_keys({"layer_x": kept}) == {"layerX": kept}


def test_ajour_build_json_keys_are_camel_case(tmp_path: Path) -> None:
    runner = CliRunner()
    fleet = str(EXAMPLES / "fleet")
    outputs = {
        "validate": runner.invoke(build_main, ["validate", "--json", fleet]),
        "render": runner.invoke(build_main, ["render", fleet, "-o", str(tmp_path / "o"), "--json"]),
        "builders list": runner.invoke(
            build_main, ["builders", "list", "--json", "--builders", str(REPO / "builder-images")]
        ),
    }
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x7fELF firmware")
    layout = f"oci-layout://{tmp_path / 'layout'}:latest"
    publish = ["publish", str(firmware), "--to", layout, "--version", "1.0", "--json"]
    outputs["publish"] = runner.invoke(build_main, publish)
    outputs["inspect"] = runner.invoke(build_main, ["inspect", layout, "--json"])
    # a real build: a git repository and a host-mode builder script
    src = tmp_path / "src"
    repo = git.Repo.init(src, initial_branch="main")
    (src / "main.c").write_text("int main(void) { return 0; }\n")
    repo.index.add(["main.c"])
    repo.index.commit("fw", author=git.Actor("x", "x@ajour.invalid"))
    repo.close()
    fake_builder(tmp_path / "builders", "fake", 'mkdir -p out; echo fw > "$AJOUR_ARTIFACT_PATH"\n')
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "fw.yaml").write_text(
        "kind: Application\nmetadata: {name: fw}\nspec:\n  firmware:\n    container:\n"
        "      image: fw:latest\n      build:\n        image: fake\n"
        f"        source: {{git: {{uri: 'file://{src}', rev: main}}}}\n"
        "        artifact: {path: out/fw.bin}\n"
    )
    (tmp_path / "fleet" / "ajour.yaml").write_text(
        "allowed_applications: [fw]\nsources: {allow_local: true}\n"
    )
    build = ["build", str(tmp_path / "fleet"), "--app", "fw", "--runner", "host", "--json"]
    build += ["--builders", str(tmp_path / "builders"), "--state-dir", str(tmp_path / "state")]
    outputs["build"] = runner.invoke(build_main, [*build, "--version", "1.0"])
    for what, result in outputs.items():
        assert result.exit_code == 0, (what, result.output)
        assert_camel(result.stdout, what)
    (record,) = json.loads(outputs["build"].stdout)
    assert record["cacheKey"] and "logTail" in record and record["artifact"]["sha256"]
    assert json.loads(outputs["inspect"].stdout)["manifestDigest"].startswith("sha256:")


def test_ajour_delivery_json_keys_are_camel_case(tmp_path: Path) -> None:
    runner = CliRunner()
    worker = small_worker(tmp_path)
    with serving(worker, settings(authenticate=False)) as transport:
        simulated = runner.invoke(
            delivery_main,
            ["simulate", "--http", transport.url, "--app", "app", "--devices", "2", "--json"],
        )
        status = runner.invoke(
            delivery_main, ["status", "--url", transport.url, "--token", STATUS_TOKEN, "--json"]
        )
    hashed = runner.invoke(
        delivery_main, ["hash-password", "--scheme", "sha512", "--json"], input="pw"
    )
    targets = runner.invoke(delivery_main, ["targets", "--fleet", str(EXAMPLES / "fleet")])
    for what, result in (("simulate", simulated), ("status", status), ("hash-password", hashed)):
        assert result.exit_code == 0, (what, result.output)
        assert_camel(result.stdout, what)
    for line in targets.stdout.splitlines():
        assert_camel(line, "targets")
    devices = json.loads(simulated.stdout)["devices"]
    assert {d["device"] for d in devices} == {"dev0", "dev1"}
    assert all(d["bytesReceived"] == 2000 and d["swapsRejected"] == 0 for d in devices)
    assert json.loads(simulated.stdout)["versions"] == {"1.0": 2}
