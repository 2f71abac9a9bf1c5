"""Throwaway certificates for TLS tests, made with the openssl CLI (no ``cryptography`` here).

A test CA, a server certificate for ``localhost`` and ``127.0.0.1`` (``subjectAltName``, as
hostname verification needs), and a client certificate; ``issue`` makes more (another name,
to test that a hostname mismatch is refused).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl") or ""


def _run(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pki:
    root: Path
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def issue(self, name: str, sans: str, *, client: bool = False) -> tuple[Path, Path]:
        """A certificate (and its key) signed by the test CA, for ``sans``
        (``DNS:a,IP:127.0.0.1``); ``client=True`` for client authentication."""
        cert, key, csr = (self.root / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
        ext = self.root / f"{name}.ext"
        usage = "clientAuth" if client else "serverAuth"
        ext.write_text(
            f"subjectAltName={sans}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
        )
        _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")  # fmt: skip
        _run("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key),
             "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext))  # fmt: skip
        return cert, key


def make_pki(root: Path) -> Pki:
    if not OPENSSL:
        pytest.skip("the openssl CLI is not installed")
    root.mkdir(parents=True, exist_ok=True)
    ca, ca_key = root / "ca.crt", root / "ca.key"
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=ajour test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    partial = Pki(root, ca, ca_key, ca, ca_key, ca, ca_key)
    server = partial.issue("server", "DNS:localhost,IP:127.0.0.1")
    client = partial.issue("client", "DNS:ajour-worker", client=True)
    return Pki(root, ca, ca_key, *server, *client)
