"""Device credentials as Drogue Cloud stores them: formats, verification, cache, warnings, CLI.

The hashes below were made by other implementations than the one under test: bcrypt by
Apache's ``htpasswd -B`` (``$2y$``) and PyPI's bcrypt (``$2b$``), sha512-crypt by glibc's
crypt(3) and ``openssl passwd -6``; the password is ``correct horse`` unless noted.
"""

from __future__ import annotations

import json
import logging
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ajour_build.core.errors import SpecError
from ajour_build.core.fleet import load_fleet
from delivery import device_auth, sha512_crypt
from delivery.cli import main
from delivery.http import HttpSettings, HttpTransport
from delivery.protocol import Status, decode_command, encode_status
from delivery.simulator import simulate_http
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.conftest import REPO
from tests.test_sources import publish

PASSWORD = "correct horse"
HTPASSWD_2Y = "$2y$10$mMqoZVBh53Oex2heayeeK.k0i3dWzgTn91nMLmmdOzGfX77Kl28pq"  # htpasswd -B
PYCA_72X = "$2b$05$abcdefghijklmnopqrstuujf8SX2ahXLwp9w/B.Y5XdysS6yR576q"  # bcrypt("x" * 72)
OPENSSL_6 = (  # openssl passwd -6 -salt Ajour.vector/16c
    "$6$Ajour.vector/16c$yzfDwFBxwXFdx1hfJdF6iysp5CtCDm8Cr79nEW5RFMPrszyLXuZ05eypMCqIAY0/"
    "ZzzSYIKj1eYAJDAQOSRyw/"
)
GLIBC_ROUNDS = (  # crypt(PASSWORD, "$6$rounds=12345$roundsalt")
    "$6$rounds=12345$roundsalt$1dlzjk49kwUW9gUWz6vOvliDbMrAVqsZBbS2iNps6tqFGL5yUv8F4Fu07JGgz"
    "WYoCN2bUe4Kz.7QYBN/7Y3Uj0"
)
UNICODE = "ünïcødé " * 10  # 120 bytes: longer than one SHA-512 block
GLIBC_LONG = (  # crypt(UNICODE, "$6$longsaltlongsaltIGNORED"): the salt is cut to 16
    "$6$longsaltlongsaltIGNORED$G1/YFWvtqJrPebw8s4kOoDlpcuVomly.2wIphpiyck.qxyhVPkPb./LFv2KiFO"
    "PYKWy6kErEIpSPDKyi2G8/60"
)
GLIBC_EMPTY = (  # crypt("", "$6$$")
    "$6$$/chiBau24cE26QQVW3IfIe68Xu5.JQ4E8Ie7lcRLwqxO5cxGuBhqF2HmTL.zWJ9zjChg3yJYFXeGBQ2y3Ba1d1"
)

# (what, the stored password as Drogue writes it, the password that matches it)
VECTORS: list[tuple[str, Any, str]] = [
    ("plain string", PASSWORD, PASSWORD),
    ("plain mapping", {"plain": PASSWORD}, PASSWORD),
    ("bcrypt $2y$ (htpasswd)", {"bcrypt": HTPASSWD_2Y}, PASSWORD),
    ("bcrypt $2a$", {"bcrypt": "$2a$" + HTPASSWD_2Y[4:]}, PASSWORD),
    ("bcrypt $2b$, 72 bytes", {"bcrypt": PYCA_72X}, "x" * 72),
    ("sha512 (openssl)", {"sha512": OPENSSL_6}, PASSWORD),
    ("sha512 rounds=12345 (glibc)", {"sha512": GLIBC_ROUNDS}, PASSWORD),
    ("sha512 long password and salt (glibc)", {"sha512": GLIBC_LONG}, UNICODE),
    ("sha512 empty (glibc)", {"sha512": GLIBC_EMPTY}, ""),
]


def creds(*entries: Any) -> dict[str, Any]:
    return {"credentials": list(entries)}


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    device_auth.CACHE.clear()


@pytest.mark.parametrize(("what", "stored", "right"), VECTORS, ids=[v[0] for v in VECTORS])
def test_drogue_password_forms_verify(what: str, stored: Any, right: str) -> None:
    as_pass = creds({"pass": stored})
    assert device_auth.check(as_pass, right), what
    assert not device_auth.check(as_pass, "Z" + right[1:])
    assert not device_auth.check(as_pass, "wrong")
    as_user = creds({"user": {"username": "alice", "password": stored}})
    assert device_auth.check(as_user, right, "alice")
    assert device_auth.check(as_user, right)  # logging in as the device itself
    assert not device_auth.check(as_user, right, "bob")


def test_bcrypt_reads_only_72_bytes_and_never_matches_a_nul_byte() -> None:
    """Drogue Cloud's bcrypt crate: the first 72 bytes count; a NUL byte is an error."""
    stored = creds({"pass": {"bcrypt": PYCA_72X}})
    assert device_auth.check(stored, "x" * 80)  # PyPI's bcrypt 5 would raise for this
    assert not device_auth.check(stored, "x" * 71)
    assert not device_auth.check(creds({"pass": {"bcrypt": HTPASSWD_2Y}}), PASSWORD + "\0")


def test_hashes_made_now_by_other_tools(tmp_path: Path) -> None:
    tools = {name: shutil.which(name) for name in ("openssl", "htpasswd")}
    if not all(tools.values()):
        pytest.skip(f"needs openssl and htpasswd (apache2-utils), found {tools}")
    secret = "tools-" + os.urandom(6).hex()
    sha = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"], input=secret, capture_output=True, text=True
    ).stdout.strip()
    bc = subprocess.run(
        ["htpasswd", "-inBC", "5", "u"], input=secret, capture_output=True, text=True
    ).stdout.strip()
    bc = bc.partition(":")[2]
    for stored in ({"sha512": sha}, {"bcrypt": bc}):
        assert device_auth.check(creds({"pass": stored}), secret), stored
        assert not device_auth.check(creds({"pass": stored}), secret[:-1])


def test_a_username_login_matches_only_that_users_entries() -> None:
    """As Drogue Cloud: a ``pass`` entry is for the device itself, not for any username."""
    stored = creds({"pass": "pw-7"}, {"user": {"username": "alice", "password": "wonder"}})
    assert device_auth.check(stored, "pw-7")
    assert not device_auth.check(stored, "pw-7", "mallory")
    assert device_auth.check(stored, "wonder", "alice")
    assert not device_auth.check(stored, "wonder", "mallory")


def test_our_sha512_crypt_makes_what_glibc_reads() -> None:
    made = sha512_crypt.hash_password(PASSWORD, rounds=1000)
    assert made.startswith("$6$rounds=1000$") and len(made.split("$")[3]) == 16
    assert sha512_crypt.verify(PASSWORD, made) and not sha512_crypt.verify("x", made)
    # the digest of a known glibc vector, recomputed from its parts
    _, _, salt, digest = OPENSSL_6.split("$")
    assert sha512_crypt.digest(PASSWORD.encode(), salt.encode()) == digest


# -- malformed credentials: refused when the fleet loads, with the place, never the secret

MALFORMED = [
    ("pass: {bcrypt: hunter2}", "not a bcrypt hash: expected $2b$", "[0].pass.bcrypt"),
    ("pass: {bcrypt: '$2x$" + HTPASSWD_2Y[4:] + "'}", "variant $2x$ is not accepted", "bcrypt"),
    ("pass: {bcrypt: '$2b$03$" + HTPASSWD_2Y[7:] + "'}", "cost 3 is outside 4..31", "bcrypt"),
    ("pass: {bcrypt: '" + HTPASSWD_2Y[:-1] + "'}", "got 52 characters", "bcrypt"),
    (
        "pass: {bcrypt: '" + HTPASSWD_2Y[:28] + "v" + HTPASSWD_2Y[29:] + "'}",
        "cannot occur",
        "bcrypt",
    ),
    ("pass: {sha512: hunter2}", "not a sha512-crypt ($6$) hash", "[0].pass.sha512"),
    (
        "pass: {sha512: '$6$rounds=999$s$" + OPENSSL_6[-86:] + "'}",
        "rounds=999 is outside",
        "sha512",
    ),
    (
        "pass: {sha512: '$6$rounds=x$s$" + OPENSSL_6[-86:] + "'}",
        "must be rounds=<number>",
        "sha512",
    ),
    ("pass: {sha512: '$6$rounds=5000$" + OPENSSL_6[-86:] + "'}", "the salt is missing", "sha512"),
    ("pass: {sha512: '$6$s$" + OPENSSL_6[-86:-1] + "'}", "got 85 characters", "sha512"),
    ("pass: {sha512: '$6$s$" + OPENSSL_6[-86:-1] + "z'}", "last character cannot occur", "sha512"),
    ("pass: {md5: hunter2}", "one key, plain, bcrypt or sha512", "[0].pass"),
    ("pass: {hunter2}", "got a mapping with other keys", "[0].pass"),
    ("pass: {bcrypt: " + HTPASSWD_2Y[:7] + ", sha512: x}", "other keys", "[0].pass"),
    ("pass: 12345", "got int", "[0].pass"),
    ("pass: {plain: 12345}", "a plain password must be text, got int", "[0].pass.plain"),
    ("user: {username: a, password: {bcrypt: hunter2}}", "not a bcrypt hash", "user.password"),
    ("user: {username: a}", "a user needs a password", "[0].user"),
    ("user: {password: hunter2}", "username must be text, got nothing", "user.username"),
    ("user: {username: a, password: x, unique: 'yes'}", "unique must be true", "user.unique"),
    ("user: {username: a, password: x, hunter2: 1}", "fields other than", "[0].user"),
    ("{hunter2: x}", "one key, pass, user, cert or psk", "credentials[0]"),
    ("hunter2", "got str", "credentials[0]"),
]


def _device_with(entry: str) -> str:
    return (
        "kind: Application\nmetadata: {name: app}\n---\n"
        "metadata: {name: dev, application: app}\n"
        f"spec:\n  credentials:\n    credentials:\n      - {entry}\n"
    )


@pytest.mark.parametrize(("entry", "message", "path"), MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_credentials_fail_the_fleet_load_with_their_place(
    write: Callable[[str, str], Path], entry: str, message: str, path: str
) -> None:
    with pytest.raises(SpecError) as err:
        load_fleet([write("f.yaml", _device_with(entry)).parent])
    (problem,) = err.value.problems
    assert message in problem.message
    assert problem.path is not None and problem.path.startswith("spec.credentials.credentials")
    assert path in problem.path and problem.line == 8  # the entry's line
    rendered = str(err.value)
    assert "hunter2" not in rendered and HTPASSWD_2Y[7:] not in rendered
    assert OPENSSL_6[-86:-1] not in rendered


def test_certificates_and_psks_are_accepted_and_not_passwords(
    write: Callable[[str, str], Path],
) -> None:
    path = write("f.yaml", _device_with("cert: abc\n      - psk: {key: bWV0YWxsaWNh}"))
    device = load_fleet([path.parent]).devices[("app", "dev")]
    assert device_auth.candidates(device.credentials) == []
    assert not device_auth.check(device.credentials, "abc")


def test_a_malformed_hash_at_check_time_is_refused_and_logged_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Credentials that did not come through the fleet loader: refused, never a crash."""
    bad = creds({"pass": {"bcrypt": "hunter2"}}, {"pass": {"sha512": "$6$hunter2"}})
    with caplog.at_level(logging.WARNING, logger="delivery.device_auth"):
        assert not device_auth.check(bad, "hunter2")
    text = caplog.text
    assert "spec.credentials.credentials[0].pass.bcrypt: not a bcrypt hash" in text
    assert "credentials[1].pass.sha512: not a sha512-crypt" in text
    assert "hunter2" not in text


# -- the cache


def test_verification_results_are_cached_by_hash_and_password() -> None:
    stored = creds({"pass": {"bcrypt": HTPASSWD_2Y}})
    cache = device_auth.CACHE
    started = time.thread_time()  # CPU time: what the checks cost, not how often they ran
    assert device_auth.check(stored, PASSWORD)
    first = time.thread_time() - started
    started = time.thread_time()
    for _ in range(50):
        assert device_auth.check(stored, PASSWORD)
        assert not device_auth.check(stored, "wrong")
    assert (cache.misses, cache.hits) == (2, 99), "one bcrypt run per (hash, password)"
    assert time.thread_time() - started < first * 5, "100 cached checks cost under 5 bcrypts"
    # another hash (the spec changed) is verified afresh
    assert device_auth.check(creds({"pass": {"bcrypt": "$2a$" + HTPASSWD_2Y[4:]}}), PASSWORD)
    assert cache.misses == 3
    # the cache holds keyed digests only: neither the password nor the hash
    held = repr(vars(cache))
    assert PASSWORD not in held and HTPASSWD_2Y[7:] not in held
    assert all(len(key) == 32 for key in cache._items)


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = device_auth.VerifyCache(size=3)
    keys = [bytes([i]) * 32 for i in range(5)]
    for key in keys[:3]:
        cache.put(key, True)
    assert cache.get(keys[0]) is True  # now the most recently used
    cache.put(keys[3], False)
    cache.put(keys[4], True)
    assert len(cache) == 3
    assert cache.get(keys[1]) is None and cache.get(keys[2]) is None
    assert (cache.get(keys[0]), cache.get(keys[3]), cache.get(keys[4])) == (True, False, True)


def test_plain_passwords_are_compared_without_the_cache() -> None:
    assert device_auth.check(creds({"pass": "pw"}), "pw")
    assert len(device_auth.CACHE) == 0 and device_auth.CACHE.misses == 0


# -- the plaintext warning


def test_plaintext_passwords_are_warned_about_once_per_load_by_device(
    write: Callable[[str, str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    docs = ["kind: Application\nmetadata: {name: app}\n"]
    for i in range(12):
        docs.append(
            f"metadata: {{name: dev{i:02d}, application: app}}\n"
            f"spec: {{credentials: {{credentials: [{{pass: secret-{i}}}]}}}}\n"
        )
    docs.append(
        "metadata: {name: hashed, application: app}\n"
        f"spec: {{credentials: {{credentials: [{{pass: {{sha512: '{OPENSSL_6}'}}}}]}}}}\n"
    )
    path = write("f.yaml", "---\n".join(docs))
    with caplog.at_level(logging.WARNING, logger="ajour_build.core.fleet"):
        load_fleet([path.parent])
    (record,) = [r for r in caplog.records if r.name == "ajour_build.core.fleet"]
    message = record.getMessage()
    assert message.startswith("12 device(s) keep plain-text passwords in spec.credentials: ")
    assert "dev00@app, dev01@app" in message and "dev09@app and 2 more" in message
    assert "dev10" not in message and "hashed" not in message and "secret-" not in message
    caplog.clear()
    write("f.yaml", "---\n".join(docs[:1] + docs[-1:]))
    with caplog.at_level(logging.WARNING, logger="ajour_build.core.fleet"):
        load_fleet([path.parent])
    assert caplog.records == []


# -- ajour-delivery hash-password


@pytest.mark.parametrize(
    ("args", "key"), [(["--cost", "4"], "bcrypt"), (["--scheme", "sha512"], "sha512")]
)
def test_hash_password_prints_a_spec_snippet_the_fleet_loads(
    write: Callable[[str, str], Path],
    caplog: pytest.LogCaptureFixture,
    args: list[str],
    key: str,
) -> None:
    result = CliRunner().invoke(main, ["hash-password", *args], input="s3cret pass\n")
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output
    snippet = yaml.safe_load(result.output)
    (entry,) = snippet["credentials"]["credentials"]
    assert list(entry["pass"]) == [key]
    spec = yaml.safe_dump({"spec": snippet})
    path = write(
        "f.yaml",
        "kind: Application\nmetadata: {name: app}\n---\n"
        "metadata: {name: dev, application: app}\n" + spec,
    )
    with caplog.at_level(logging.WARNING):
        device = load_fleet([path.parent]).devices[("app", "dev")]
    assert "plain-text" not in caplog.text
    assert device_auth.check(device.credentials, "s3cret pass")
    assert not device_auth.check(device.credentials, "s3cret pass\n")


def test_hash_password_user_entry_as_json() -> None:
    result = CliRunner().invoke(
        main,
        [
            "hash-password",
            "--scheme",
            "sha512",
            "--rounds",
            "1000",
            "--username",
            "alice",
            "--json",
        ],
        input="wonder",
    )
    assert result.exit_code == 0, result.output
    section = json.loads(result.output)
    (entry,) = section["credentials"]["credentials"]
    assert entry["user"]["username"] == "alice"
    assert entry["user"]["password"]["sha512"].startswith("$6$rounds=1000$")
    assert device_auth.check(section["credentials"], "wonder", "alice")


@pytest.mark.parametrize(
    ("args", "given", "message"),
    [
        ([], "", "the password is empty"),
        ([], "y" * 73, "the password is 73 bytes; bcrypt uses only the first 72"),
        (["--cost", "3"], "pw", "bcrypt cost must be 4..31, got 3"),
        (["--scheme", "sha512", "--rounds", "10"], "pw", "rounds must be 1000..999999999"),
    ],
)
def test_hash_password_refuses_what_it_cannot_hash(
    args: list[str], given: str, message: str
) -> None:
    result = CliRunner().invoke(main, ["hash-password", *args], input=given)
    assert result.exit_code == 1
    assert message in result.output and (not given or given not in result.output)


def test_hash_password_takes_no_password_on_the_command_line() -> None:
    for argv in (["hash-password", "s3cret"], ["hash-password", "--password", "s3cret"]):
        result = CliRunner().invoke(main, argv, input="x")
        assert result.exit_code == 2, result.output


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {marker!r} on the terminal; got {bytes(seen)!r}")
        seen += os.read(fd, 1024)


def test_hash_password_prompts_on_a_terminal_without_echo() -> None:
    primary, secondary = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "delivery.cli", "hash-password", "--scheme", "sha512"],
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=secondary,
        cwd=REPO,
        env=env,
    )
    os.close(secondary)
    seen = bytearray()
    try:
        _read_until(primary, b"Device password:", seen)
        os.write(primary, b"typed-secret\n")
        _read_until(primary, b"Repeat for confirmation:", seen)
        os.write(primary, b"typed-secret\n")
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
        os.close(primary)
    assert proc.returncode == 0
    assert b"typed-secret" not in seen, "the prompt must not echo the password"
    section = yaml.safe_load(out)
    assert device_auth.check(section["credentials"], "typed-secret")


# -- HTTP, end to end


def test_http_devices_log_in_with_hashed_credentials(
    write: Callable[[str, str], Path], tmp_path: Path
) -> None:
    entries = {
        "bc": {"bcrypt": HTPASSWD_2Y},
        "sh": {"sha512": OPENSSL_6},
        "pl": {"plain": PASSWORD},
    }
    app = {"kind": "Application", "metadata": {"name": "app"}}
    app["spec"] = {"firmware": {"container": {"image": "fw/app:latest"}}}
    docs = [yaml.safe_dump(app)]
    docs += [
        f"metadata: {{name: {name}, application: app}}\n"
        + yaml.safe_dump({"spec": {"credentials": {"credentials": [{"pass": stored}]}}})
        for name, stored in entries.items()
    ]
    fleet = write("f.yaml", "---\n".join(docs)).parent
    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "2.0", b"z" * 4096)
    worker = Worker(Targets(load_fleet([fleet]), f"oci-layout://{tmp_path / 'oci'}"), StatusStore())
    transport = HttpTransport(worker, HttpSettings(port=0))
    transport.start()
    try:
        status = encode_status(Status(b"0.1", 512, 9))
        for name in entries:
            url = f"{transport.url}/v1/dfu?application=app&device={name}"
            assert _post(url, status, f"{name}@app:{PASSWORD}") == 200, name
            assert _post(url, status, f"{name}@app:wrong") == 401, name
        device_auth.CACHE.clear()
        # a whole update in 66 requests, one bcrypt run
        (result,) = simulate_http(transport.url, "app", ["bc"], b"0.1", 64, PASSWORD)
        assert result.synced and result.final == "2.0" and result.steps >= 64
        assert device_auth.CACHE.misses == 1 and device_auth.CACHE.hits >= 64
    finally:
        transport.stop()


def _post(url: str, body: bytes, auth: str) -> int:
    import base64

    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            decode_command(response.read())
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
