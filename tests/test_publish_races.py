"""Immutable versions under concurrency: of two publishers of one version with different
firmware, exactly one wins and the other gets the conflict error; the tag holds the winner.

Real threads (the service's workers) and real spawned processes (two CLIs or Tekton steps)
publish to real OCI layout directories and to the real docker-registry.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ajour_build.core.artifact.format import sha256_digest
from ajour_build.core.artifact.layout_store import REF_NAME, LayoutStore
from ajour_build.core.artifact.reference import OciRef
from ajour_build.core.artifact.registry_reader import RegistryReader
from tests.conftest import REPO
from tests.publish_race import Outcome, race
from tests.registry import Registry, run_registry

CONTENT = (b"A" * 65536, b"B" * 65536)  # what each contender publishes as version 1.0


def firmware_files(tmp_path: Path) -> list[Path]:
    paths = []
    for index, content in enumerate(CONTENT):
        path = tmp_path / f"fw-{index}.bin"
        path.write_bytes(content)
        paths.append(path)
    return paths


def check_one_winner(trial: list[Outcome], what: str) -> tuple[int, str]:
    """Exactly one winner, the loser told precisely; returns (winner, its digest)."""
    assert len(trial) == 2, f"{what}: a contender did not report: {trial}"
    winners = [o for o in trial if o.won]
    assert len(winners) == 1, f"{what}: {len(winners)} winners for one version: {trial}"
    winner = winners[0].contender
    loser = trial[1 - winner]
    ours, theirs = sha256_digest(CONTENT[loser.contender]), sha256_digest(CONTENT[winner])
    expected = (
        rf"version 1\.0 is already published at \S+ with different firmware \(published"
        rf" {theirs}, this build {ours}\); versions are immutable: bump the version"
    )
    assert re.search(expected, loser.detail), f"{what}: loser said {loser.detail!r}"
    return winner, winners[0].detail


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_two_layout_publishers_of_one_version_never_both_win(tmp_path: Path, mode: str) -> None:
    trials = 100
    files = firmware_files(tmp_path)
    layouts = [tmp_path / f"layout-{n}" for n in range(trials)]
    contenders = [
        [(f"oci-layout://{layout}:latest", str(files[i]), "1.0") for layout in layouts]
        for i in range(2)
    ]
    outcomes = race(contenders, mode)
    wins = [0, 0]
    for n, trial in enumerate(outcomes):
        winner, digest = check_one_winner(trial, f"trial {n}")
        wins[winner] += 1
        store = LayoutStore(layouts[n])
        index = json.loads((layouts[n] / "index.json").read_text())
        refs = [m["annotations"][REF_NAME] for m in index["manifests"]]
        assert sorted(refs) == ["1.0", "latest"], f"trial {n}: index {refs}"
        assert store.resolve("1.0") == store.resolve("latest") == digest
        assert store.firmware(store.inspect("1.0")) == CONTENT[winner]
        assert not list(layouts[n].rglob(".tmp-*"))
    assert sum(wins) == trials
    print(f"{mode}: contender 0 won {wins[0]}, contender 1 won {wins[1]} of {trials}")


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_the_same_firmware_published_twice_at_once_is_idempotent(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "fw.bin"
    path.write_bytes(CONTENT[0])
    layouts = [tmp_path / f"layout-{n}" for n in range(10)]
    contenders = [[(f"oci-layout://{lay}:latest", str(path), "1.0") for lay in layouts]] * 2
    for n, trial in enumerate(race(contenders, mode)):
        assert all(o.won for o in trial), trial
        digest = LayoutStore(layouts[n]).resolve("1.0")
        assert {o.detail for o in trial} == {digest}, "both report the one stored manifest"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_two_registry_publishers_of_one_version_never_both_win(
    registry: Registry, tmp_path: Path, mode: str
) -> None:
    trials = 20
    files = firmware_files(tmp_path)
    repos = [f"race/{mode}-{n}" for n in range(trials)]
    contenders = [
        [(f"oci://{registry.host}/{repo}:latest", str(files[i]), "1.0") for repo in repos]
        for i in range(2)
    ]
    outcomes = race(contenders, mode)
    reader = RegistryReader(registry.host)
    for n, trial in enumerate(outcomes):
        winner, digest = check_one_winner(trial, f"trial {n}")
        for tag in ("1.0", "latest"):
            ref = OciRef(registry.host, repos[n], tag)
            assert reader.resolve(ref) == digest, f"trial {n}: {tag} holds another manifest"
        info = reader.inspect(OciRef(registry.host, repos[n], "latest"))
        assert reader.firmware(OciRef(registry.host, repos[n], "latest"), info) == CONTENT[winner]


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_two_dir_publishers_of_one_version_never_both_win(tmp_path: Path, mode: str) -> None:
    trials = 100
    files = firmware_files(tmp_path)
    names = [tmp_path / "files" / f"fw-{n}" for n in range(trials)]
    contenders = [[(f"dir://{name}", str(files[i]), "1.0") for name in names] for i in range(2)]
    for n, trial in enumerate(race(contenders, mode)):
        winner, digest = check_one_winner(trial, f"trial {n}")
        meta = json.loads(names[n].with_suffix(".json").read_text())
        assert meta["version"] == "1.0" and "sha256:" + meta["checksum"] == digest
        assert names[n].with_suffix(".bin").read_bytes() == CONTENT[winner], "bin and json agree"
    assert not list((tmp_path / "files").glob(".tmp-*"))


def test_two_publish_clis_of_one_version_never_both_win(tmp_path: Path) -> None:
    trials = 10
    files = firmware_files(tmp_path)
    for n in range(trials):
        layout = tmp_path / f"layout-{n}"
        target = ["--to", f"oci-layout://{layout}:latest", "--version", "1.0", "--json"]
        clis = [
            subprocess.Popen(
                [sys.executable, "-m", "ajour_build.cli", "publish", str(files[i]), *target],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        trial = []
        for i, cli in enumerate(clis):
            out, err = cli.communicate(timeout=120)
            won = cli.returncode == 0
            assert cli.returncode in (0, 1), err
            report = json.loads(out)  # with --json, an error is JSON on stdout too
            trial.append(Outcome(n, i, won, report["digest"] if won else report["error"]))
        winner, digest = check_one_winner(trial, f"trial {n}")
        store = LayoutStore(layout)
        assert store.resolve("1.0") == store.resolve("latest") == digest
        assert store.firmware(store.inspect("latest")) == CONTENT[winner]
