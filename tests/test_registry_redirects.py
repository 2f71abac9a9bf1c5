"""The registry reader follows redirects itself: credentials stay on the registry's origin.

Two loopback servers on different ports are two origins: a registry front (a fake, or a
proxy in front of the real docker-registry) that redirects blob GETs, and a "storage" server
that, like S3 behind a presigned URL, fails a request carrying an Authorization header.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ajour_build.core.artifact.credentials import Credentials
from ajour_build.core.artifact.format import Descriptor, sha256_digest
from ajour_build.core.artifact.redirects import FetchError, Origin, fetch, safe_url
from ajour_build.core.artifact.reference import parse_oci
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.errors import ArtifactError
from ajour_build.publish.destination import publisher_for
from ajour_build.publish.publisher import FirmwareArtifact
from delivery.sources.firmware_source import SourceUnavailable
from delivery.sources.oci import OciSource
from tests.loopback_http import Answer, Seen, presigned_storage, serve
from tests.registry import Registry, htpasswd_file, run_registry
from tests.tls import make_pki

BLOB = b"firmware bytes " * 64
DIGEST = sha256_digest(BLOB)
DESC = Descriptor.model_validate(
    {"mediaType": "application/octet-stream", "digest": DIGEST, "size": len(BLOB)}
)
CREDS = Credentials("ci", "s3cr3t-registry-pw", "AJOUR_REGISTRY_USERNAME")
SIGNATURE = "X-Amz-Signature=presigned-s1gnature-value"


def redirecting(to: Callable[[Seen], str], status: int = 307) -> Callable[[Seen], Answer]:
    """A registry front that redirects every blob GET to ``to(request)``."""

    def answer(seen: Seen) -> Answer:
        if "/blobs/" in seen.path:
            return status, {"Location": to(seen)}, b""
        return 404, {}, b'{"errors": [{"code": "NAME_UNKNOWN"}]}'

    return answer


def test_blob_redirect_to_another_origin_drops_the_credentials() -> None:
    with (
        serve(presigned_storage(lambda _path: BLOB)) as storage,
        serve(redirecting(lambda _s: f"{storage.url}/bucket/{DIGEST}?{SIGNATURE}")) as front,
    ):
        reader = RegistryReader(front.host, CREDS)
        assert reader.blob("fw/app", DESC) == BLOB
    assert front.headers_named("Authorization") == [CREDS.basic()], "the registry got them"
    assert storage.headers_named("Authorization") == [], "the storage never did"
    assert len(storage.seen) == 1


def test_same_origin_redirect_keeps_the_credentials() -> None:
    def front_answer(seen: Seen) -> Answer:
        if seen.path.startswith("/v2/fw/app/blobs/"):
            return 302, {"Location": f"/v2/_storage/{DIGEST}"}, b""
        if seen.path.startswith("/v2/_storage/") and "authorization" in seen.headers:
            return 200, {}, BLOB
        return 401, {}, b"credentials lost on a same-origin redirect"

    with serve(front_answer) as front:
        assert RegistryReader(front.host, CREDS).blob("fw/app", DESC) == BLOB
    assert front.headers_named("Authorization") == [CREDS.basic()] * 2


def test_credentials_once_dropped_are_not_sent_again_on_the_way_back() -> None:
    """registry -> storage -> registry: the hop back to the registry gets no credentials."""
    where: dict[str, str] = {}

    def front_answer(seen: Seen) -> Answer:
        if seen.path.endswith("/again"):
            return 200, {}, BLOB
        return 302, {"Location": f"{where['storage']}/x"}, b""

    with serve(front_answer) as front:
        with serve(lambda _s: (302, {"Location": f"{front.url}/v2/again"}, b"")) as storage:
            where["storage"] = storage.url
            assert RegistryReader(front.host, CREDS).blob("fw/app", DESC) == BLOB
    assert [s.path for s in front.seen] == [f"/v2/fw/app/blobs/{DIGEST}", "/v2/again"]
    assert front.headers_named("Authorization") == [CREDS.basic()], "only the first request"
    assert storage.headers_named("Authorization") == []


def test_redirects_are_bounded() -> None:
    with serve(lambda s: (302, {"Location": s.path + "x"}, b"")) as front:
        with pytest.raises(ArtifactError, match=r"more than 5 redirects") as caught:
            RegistryReader(front.host, CREDS).blob("fw/app", DESC)
    assert len(front.seen) == 6
    assert CREDS.password not in str(caught.value)


def test_storage_errors_name_the_storage_without_the_presigned_query() -> None:
    with (
        serve(lambda _s: (403, {}, b"<Error><Code>AccessDenied</Code>Request has expired")) as st,
        serve(redirecting(lambda _s: f"{st.url}/bucket/{DIGEST}?{SIGNATURE}")) as front,
    ):
        with pytest.raises(ArtifactError) as caught:
            RegistryReader(front.host, CREDS).blob("fw/app", DESC)
    message = str(caught.value)
    assert f"failed with HTTP 403 (at {st.url}/bucket/{DIGEST}?…, after 1 redirect(s))" in message
    assert "presigned URL may have expired" in message and "Request has expired" in message
    assert "s1gnature" not in message, "a presigned URL's query is a credential"
    assert "denied" not in message, "it was not the registry that refused the credentials"


def test_a_bearer_challenge_from_the_storage_is_not_answered() -> None:
    with (
        serve(
            lambda _s: (401, {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:9/t"'}, b"")
        ) as st,
        serve(redirecting(lambda _s: f"{st.url}/b")) as front,
    ):
        with pytest.raises(ArtifactError, match=r"HTTP 401 \(at http://127\.0\.0\.1:\d+/b"):
            RegistryReader(front.host, CREDS).blob("fw/app", DESC)
    assert len(st.seen) == 1, "no token dance for a server that is not the registry"


def test_unreachable_storage_is_named_as_such() -> None:
    with serve(lambda _s: (200, {}, b"")) as gone:
        dead = gone.url
    with serve(redirecting(lambda _s: f"{dead}/b?{SIGNATURE}")) as front:
        with pytest.raises(ArtifactError) as caught:
            RegistryReader(front.host, CREDS).blob("fw/app", DESC)
    message = str(caught.value)
    assert f"GET {dead}/b?… failed" in message and "after 1 redirect(s)" in message
    assert "s1gnature" not in message


def test_token_service_credentials_stay_on_the_realm() -> None:
    """The bearer realm gets basic credentials (the protocol); a redirect away from it not."""
    with serve(lambda _s: (200, {}, b'{"token": "issued-token"}')) as elsewhere:
        with serve(lambda _s: (302, {"Location": f"{elsewhere.url}/token"}, b"")) as realm:

            def front_answer(seen: Seen) -> Answer:
                if seen.headers.get("authorization") == "Bearer issued-token":
                    return 200, {}, BLOB
                challenge = f'Bearer realm="{realm.url}/token",service="reg",scope="repo:pull"'
                return 401, {"WWW-Authenticate": challenge}, b""

            with serve(front_answer) as front:
                assert RegistryReader(front.host, CREDS).blob("fw/app", DESC) == BLOB
    assert realm.headers_named("Authorization") == [CREDS.basic()]
    assert elsewhere.headers_named("Authorization") == []
    assert front.headers_named("Authorization") == [CREDS.basic(), "Bearer issued-token"]


# -- the rules of redirects.fetch itself ------------------------------------------------------


def test_https_is_never_downgraded_except_to_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    with serve(lambda _s: (200, {}, b"plain")) as plain:
        targets = {"/remote": "http://storage.example.invalid/blob", "/local": plain.url + "/b"}
        with serve(
            lambda s: (302, {"Location": targets[s.path]}, b""), (pki.server_cert, pki.server_key)
        ) as tls:
            secure = tls.url.replace("127.0.0.1", "localhost")
            headers, trusted = {"Authorization": "Bearer t0ken"}, Origin.of(secure)
            with pytest.raises(FetchError, match="refusing a redirect from https to plain http"):
                fetch(
                    "GET", secure + "/remote", headers, trusted=trusted, timeout=5, limit=99,
                    insecure=True,
                )  # fmt: skip
            got = fetch("GET", secure + "/local", headers, trusted=trusted, timeout=5, limit=99)
    assert (got.status, got.body, got.redirects, got.trusted) == (200, b"plain", 1, False)
    assert plain.headers_named("Authorization") == []


def test_plain_http_off_loopback_needs_insecure_and_cookies_stay_home() -> None:
    with serve(lambda _s: (200, {}, b"ok")) as storage:
        with serve(lambda _s: (302, {"Location": storage.url + "/x"}, b"")) as front:
            headers = {"Cookie": "session=abc", "Authorization": "Basic x", "Accept": "*/*"}
            got = fetch(
                "GET", front.url, headers, trusted=Origin.of(front.url), timeout=5, limit=99
            )
    assert got.body == b"ok"
    assert front.seen[0].headers["cookie"] == "session=abc"
    assert (
        "cookie" not in storage.seen[0].headers and "authorization" not in storage.seen[0].headers
    )
    assert storage.seen[0].headers["accept"] == "*/*", "other headers are kept"
    with pytest.raises(FetchError, match=r"refusing plain http to 'storage\.example\.invalid'"):
        fetch(
            "GET",
            "http://storage.example.invalid/x",
            {},
            trusted=Origin.of("http://127.0.0.1"),
            timeout=5,
            limit=9,
        )


def test_origin_and_safe_url() -> None:
    assert Origin.of("https://Reg.Example.com/v2/") == Origin.of("https://reg.example.com:443/x")
    assert Origin.of("http://reg.example.com") != Origin.of("https://reg.example.com")
    assert Origin.of("http://127.0.0.1:5000/") != Origin.of("http://127.0.0.1:5001/")
    assert str(Origin.of("http://[::1]:80/x")) == "http://[::1]:80"
    assert safe_url("https://u:p@s3.example.com:8443/b/k?X-Amz-Signature=1#f") == (
        "https://s3.example.com:8443/b/k?…"
    )


# -- the real docker-registry behind a redirecting front --------------------------------------


def proxy_to(registry: Registry, storage_url: str) -> Callable[[Seen], Answer]:
    """A front for the real registry: everything is proxied, except that a blob GET the
    registry would answer (credentials checked by a HEAD first) is redirected to storage."""

    def forward(method: str, seen: Seen) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(registry.host, timeout=10)
        try:
            keep = {k: v for k, v in seen.headers.items() if k not in ("host", "connection")}
            conn.request(method, seen.path, headers=keep)
            response = conn.getresponse()
            body = response.read()
            headers = {
                k: v
                for k, v in response.getheaders()
                if k.lower() in ("content-type", "docker-content-digest", "www-authenticate")
            }
            return response.status, headers, body
        finally:
            conn.close()

    def answer(seen: Seen) -> Answer:
        if seen.method == "GET" and "/blobs/sha256:" in seen.path:
            status, headers, body = forward("HEAD", seen)
            if status != 200:
                return status, headers, body
            digest = seen.path.rsplit("/", 1)[1]
            return 307, {"Location": f"{storage_url}/docker/{digest}?{SIGNATURE}"}, b""
        return forward(seen.method, seen)

    return answer


def test_real_registry_behind_a_front_that_redirects_blobs_to_presigned_storage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    htpasswd = htpasswd_file(tmp_path / "htpasswd", CREDS.username, CREDS.password)
    with run_registry(tmp_path / "registry", htpasswd=htpasswd) as registry:
        env = {"AJOUR_REGISTRY_USERNAME": CREDS.username, "AJOUR_REGISTRY_PASSWORD": CREDS.password}
        url = f"oci://{registry.host}/fw/app:latest"
        firmware = b"\xa5" * 5000
        path = tmp_path / "fw.bin"
        path.write_bytes(firmware)
        publisher_for(url, env).publish(FirmwareArtifact(path, "3.1.4"))

        def blob(path: str) -> bytes | None:  # what the bucket holds: the registry's blobs
            reader = RegistryReader(registry.host, CREDS)
            digest = path.rsplit("/", 1)[1]
            desc = DESC.model_copy(update={"digest": digest, "size": 0})
            try:
                return reader.blob("fw/app", desc)
            except ArtifactError:
                return None

        with (
            serve(presigned_storage(blob)) as storage,
            serve(proxy_to(registry, storage.url)) as front,
        ):
            ref = parse_oci(f"oci://{front.host}/fw/app:latest")
            with caplog.at_level(logging.DEBUG):
                target = OciSource(RegistryReader(front.host, CREDS), ref).target()
            assert (target.version, target.data) == (b"3.1.4", firmware)
            anonymous = OciSource(RegistryReader(front.host), ref)
            with pytest.raises(
                SourceUnavailable, match=r"denied manifest fw/app:latest \(HTTP 401\)"
            ):
                anonymous.target()
    blob_gets = [s for s in storage.seen if s.method == "GET"]
    assert len(blob_gets) == 2, "config and firmware blobs came from the storage"
    assert storage.headers_named("Authorization") == []
    assert all(s.headers.get("authorization") == CREDS.basic() for s in front.seen[:4])
    assert CREDS.password not in caplog.text
    assert urlsplit(storage.url).port != urlsplit(front.url).port
