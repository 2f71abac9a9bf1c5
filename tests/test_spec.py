"""Bad input in fleet specs: each gets a precise, located error."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ajour_build.core.errors import Problem, SpecError
from ajour_build.core.fleet import load_fleet
from tests.conftest import APP

Write = Callable[[str, str], Path]


def problems(paths: list[Path]) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        load_fleet(paths)
    return info.value.problems


def one(paths: list[Path]) -> Problem:
    found = problems(paths)
    assert len(found) == 1, [p.render() for p in found]
    return found[0]


def test_typo_in_field_names_the_field_line_and_suggestion(write: Write) -> None:
    path = write(
        "a.yaml",
        APP.format(name="app1").replace("        image: registry", "        imgae: registry"),
    )
    found = problems([path])
    typo = next(p for p in found if "imgae" in p.message)
    assert typo.message == "unknown field 'imgae'"
    assert typo.hint == "did you mean 'image'?"
    assert typo.path == "spec.firmware.container.build.imgae"
    assert typo.line == 9 and typo.file == str(path)
    missing = next(p for p in found if "required" in p.message)
    assert missing.path == "spec.firmware.container.build"


def test_two_firmware_branches(write: Write) -> None:
    path = write(
        "a.yaml",
        """\
        kind: Application
        metadata: {name: app1}
        spec:
          firmware:
            container: {image: "fw:1"}
            file: {name: fw}
        """,
    )
    problem = one([path])
    assert "exactly one of container, hawkbit or file; got container and file" in problem.message
    assert problem.path == "spec.firmware" and problem.line == 4


def test_no_firmware_branch(write: Write) -> None:
    path = write("a.yaml", "metadata: {name: app1}\nspec:\n  firmware: {}\n")
    assert "got none" in one([path]).message


HOSTILE = [
    ("ext::sh -c touch% /tmp/pwned", "remote helper"),
    ("fd::17", "remote helper"),
    ("-uhttps://x", "starts with '-'"),
    ("--upload-pack=touch /tmp/x", "starts with '-'"),
    ("https://user:hunter2@git.example.com/org/fw", "embeds credentials"),
    ("https://ghp_token@git.example.com/org/fw", "embeds credentials"),
    ("ssh://git:s3cr3tpw@git.example.com/org/fw", "embeds credentials"),
    ("http://git.example.com/org/fw", "scheme 'http' is not allowed"),
    ("git://git.example.com/org/fw", "scheme 'git' is not allowed"),
    ("file://evil.example.com/etc", "file:///absolute/path"),
    ("https://git.example.com/org/fw\n--x", "whitespace or control"),
    ("", "empty"),
    ("ssh://-oProxyCommand=id/org/fw", "the host '-oProxyCommand=id' starts with '-'"),
    ("ssh://git@-oProxyCommand=id/org/fw", "the host '-oProxyCommand=id' starts with '-'"),
    ("ssh://-oProxyCommand=id@git.example.com/fw", "the user '-oProxyCommand=id' starts with"),
    ("ssh://[-oProxyCommand=id]/org/fw", "starts with '-'"),
    ("ssh://git.example.com/--upload-pack=id", "repository path '--upload-pack=id' starts"),
    ("ssh://git.example.com:-p/org/fw", "is not a host name"),
    ("https://git.example.com:22x/org/fw", "is not a host name"),
    ("git@-oProxyCommand=id:org/fw", "the host '-oProxyCommand=id' starts with '-'"),
    ("-oProxyCommand=id:org/fw", "starts with '-'"),
    ("git.example.com:--upload-pack=id", "repository path '--upload-pack=id' starts"),
    ("-user@git.example.com:org/fw", "starts with '-'"),
]


@pytest.mark.parametrize(("uri", "expected"), HOSTILE)
def test_hostile_git_uris_are_refused(write: Write, uri: str, expected: str) -> None:
    text = APP.format(name="app1").replace(
        "uri: https://git.example.com/org/fw.git", f"uri: {json.dumps(uri)}"
    )
    problem = one([write("a.yaml", text)])
    assert expected in problem.message
    assert problem.path == "spec.firmware.container.build.source.git.uri"
    for secret in ("hunter2", "s3cr3tpw", "ghp_token"):
        assert secret not in problem.render()


@pytest.mark.parametrize(
    "uri",
    [
        "https://git.example.com/org/fw.git",
        "ssh://git@git.example.com:2222/org/fw.git",
        "git@git.example.com:org/fw.git",
        "file:///srv/git/fw.git",
    ],
)
def test_ordinary_git_uris_are_accepted(write: Write, uri: str) -> None:
    text = APP.format(name="app1").replace("uri: https://git.example.com/org/fw.git", f"uri: {uri}")
    fleet = load_fleet([write("a.yaml", text)])
    build = fleet.applications["app1"].firmware
    assert build is not None and build.build is not None
    assert build.build.source.git.uri == uri


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("../secret.bin", "contains '..'"),
        ("out/../../x.bin", "contains '..'"),
        ("/etc/passwd", "is absolute"),
        ("out\\\\fw.bin", "use '/'"),
        ("", "is empty"),
    ],
)
def test_artifact_path_must_stay_inside(write: Write, path: str, expected: str) -> None:
    text = APP.format(name="app1").replace("path: out/fw.bin", f'path: "{path}"')
    problem = one([write("a.yaml", text)])
    assert expected in problem.message
    assert problem.path == "spec.firmware.container.build.artifact.path"


def test_one_megabyte_args_list(write: Write) -> None:
    args = "\n".join(f"          - {'x' * 1000}" for _ in range(1024))
    text = APP.format(name="app1").replace(
        "        artifact:", f"        args:\n{args}\n        artifact:"
    )
    path = write("a.yaml", text)
    assert path.stat().st_size > 1_000_000
    problem = one([path])
    assert "args has 1024 items and 1024000 bytes; the limits are 256 items" in problem.message
    assert problem.path == "spec.firmware.container.build.args"


def test_versions_and_refs_stay_text(write: Write) -> None:
    text = (
        APP.format(name="app1")
        .replace("rev: main", "rev: 0.10")
        .replace("image: app1:latest", "image: app1:1.10")
    )
    fleet = load_fleet([write("a.yaml", text)])
    firmware = fleet.applications["app1"].firmware
    assert firmware is not None and firmware.build is not None
    assert firmware.build.source.git.rev == "0.10"
    assert firmware.container is not None and firmware.container.image == "app1:1.10"


def test_boolean_where_text_is_expected(write: Write) -> None:
    text = APP.format(name="app1").replace("rev: main", "rev: on")
    problem = one([write("a.yaml", text)])
    assert "got the boolean true" in problem.message and "quotes" in problem.message
    assert problem.path == "spec.firmware.container.build.source.git.rev"


def test_number_from_json_is_refused_with_hint(write: Write) -> None:
    path = write(
        "a.json",
        json.dumps(
            {
                "metadata": {"name": "app1"},
                "spec": {
                    "firmware": {
                        "container": {
                            "image": "a:1",
                            "build": {
                                "image": "b:1",
                                "source": {"git": {"uri": "https://h/r", "rev": 0.1}},
                            },
                        }
                    }
                },
            }
        ),
    )
    problem = one([path])
    assert "got the number 0.1; put the value in quotes" in problem.message


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        ("30", "'30' is not a duration"),
        ('"soon"', "not a duration"),
        ('"0s"', "shorter than one second"),
        ('"49h"', "longer than the 48h limit"),
    ],
)
def test_bad_timeouts(write: Write, timeout: str, expected: str) -> None:
    text = APP.format(name="app1") + f"        timeout: {timeout}\n"
    assert expected in one([write("a.yaml", text)]).message


def test_timeouts_are_normalised(write: Write) -> None:
    text = APP.format(name="app1") + "        timeout: 90m\n"
    fw = load_fleet([write("a.yaml", text)]).applications["app1"].firmware
    assert fw is not None and fw.build is not None and fw.build.timeout == "1h30m0s"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("App1", "DNS-1123 label"),
        ("a" * 64, "DNS-1123 label"),
        ("-x", "DNS-1123 label"),
        ("a.b", "DNS-1123 label"),
    ],
)
def test_application_names_are_dns_labels(write: Write, name: str, expected: str) -> None:
    problem = one([write("a.yaml", f"kind: Application\nmetadata:\n  name: {name!r}\n")])
    assert expected in problem.message


def test_reserved_and_invalid_env(write: Write) -> None:
    text = APP.format(name="app1") + (
        "        env:\n"
        "          - {name: AJOUR_ARTIFACT_PATH, value: x}\n"
        "          - {name: DOCKER_CONFIG, value: x}\n"
        "          - {name: 1BAD, value: x}\n"
    )
    found = problems([write("a.yaml", text)])
    messages = " | ".join(p.message for p in found)
    assert messages.count("is reserved") == 2
    assert "not a valid environment variable name" in messages
    assert {p.path for p in found} == {
        "spec.firmware.container.build.env[0].name",
        "spec.firmware.container.build.env[1].name",
        "spec.firmware.container.build.env[2].name",
    }


def test_env_list_values_are_joined(write: Write) -> None:
    text = APP.format(name="app1") + "        env:\n          - {name: FEATURES, value: [a, b]}\n"
    fw = load_fleet([write("a.yaml", text)]).applications["app1"].firmware
    assert fw is not None and fw.build is not None
    assert fw.build.env[0].text == "a b"


def test_build_only_for_container(write: Write) -> None:
    text = (
        "kind: Application\nmetadata: {name: app1}\nspec:\n  firmware:\n"
        "    hawkbit:\n      controller: c\n      build: {}\n"
    )
    problem = one([write("a.yaml", text)])
    assert "container firmware only" in problem.message


def test_firmware_image_must_be_relative(write: Write) -> None:
    text = APP.format(name="app1").replace(
        "image: app1:latest", "image: registry.example.com/x/app1:latest"
    )
    problem = one([write("a.yaml", text)])
    assert "relative to" in problem.message and "registry.prefix" in problem.message


def test_kind_and_application_must_agree(write: Write) -> None:
    text = "kind: Application\nmetadata: {name: d1, application: app1}\n"
    assert "must not have metadata.application" in one([write("a.yaml", text)]).message
    text = "kind: Device\nmetadata: {name: d1}\n"
    assert "needs metadata.application" in one([write("b.yaml", text)]).message


@pytest.mark.parametrize(
    "uri",
    [
        "https://user:pw-s3cr3t@h.example/x y",
        "ssh://git:pw-s3cr3t@h.example/-x\n",
        "http://u:pw-s3cr3t@h/x",
    ],
)
def test_credentials_never_echo_in_errors(write: Write, uri: str) -> None:
    text = APP.format(name="app1").replace(
        "uri: https://git.example.com/org/fw.git", f"uri: {json.dumps(uri)}"
    )
    problem = one([write("a.yaml", text)])
    assert "pw-s3cr3t" not in problem.render()
    assert "***@" in problem.render()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "app1\n"),  # a regex ending in "$" alone let a trailing newline through
        ("image", "app1:latest\n"),
        ("env", "X\n"),
    ],
)
def test_a_trailing_newline_is_not_part_of_a_name(write: Write, field: str, value: str) -> None:
    text = APP.format(name="app1")
    if field == "env":
        text += f"        env:\n          - {{name: {json.dumps(value)}, value: x}}\n"
    elif field == "image":
        text = text.replace("image: app1:latest", f"image: {json.dumps(value)}")
    else:
        text = text.replace("name: app1", f"name: {json.dumps(value)}")
    problem = one([write("a.yaml", text)])
    assert "not a" in problem.message or "not a valid" in problem.message
