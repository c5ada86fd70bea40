"""A self-signed certificate for TLS tests, made with the ``openssl`` CLI.

It names ``127.0.0.1`` and ``localhost`` (subjectAltName), so a client that
trusts it (as its own CA file) verifies a connection to either."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(directory: Path, names: str = "IP:127.0.0.1,DNS:localhost") -> tuple[str, str]:
    """Write ``cert.pem`` and ``key.pem`` into ``directory``; their paths.
    ``names``: the subjectAltName the certificate carries."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=click2dial test",
         "-keyout", str(key), "-out", str(cert),
         "-addext", f"subjectAltName={names}",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return str(cert), str(key)
