"""Real local search nodes for tests: Elasticsearch (plain or with security + TLS) and OpenSearch.

The nodes are started and stopped by scripts/elasticsearch.sh and scripts/opensearch.sh, which pin
the versions; this module only drives them and reads the pins from them.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import secrets
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
ADMIN_USER = "streamsync-admin"
# A start waits up to 180 s for health in the script; this covers a first download and unpacking.
START_TIMEOUT = 600
KINDS = ("elasticsearch", "elasticsearch-secure", "opensearch")


@dataclass(frozen=True)
class NodeInfo:
    kind: str  # "elasticsearch" | "elasticsearch-secure" | "opensearch"
    name: str
    url: str
    version: str


def _script(kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown node kind {kind!r}; one of {', '.join(KINDS)}")
    return SCRIPTS / ("opensearch.sh" if kind == "opensearch" else "elasticsearch.sh")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def opensearch_versions() -> list[str]:
    """The OpenSearch versions pinned in scripts/opensearch.sh, oldest first."""
    text = (SCRIPTS / "opensearch.sh").read_text()
    found = re.search(r"^OPENSEARCH_VERSIONS=\(([^)]*)\)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError("scripts/opensearch.sh has no OPENSEARCH_VERSIONS=(...) line")
    return found.group(1).split()


def elasticsearch_version() -> str:
    """The Elasticsearch version pinned in scripts/elasticsearch.sh."""
    text = (SCRIPTS / "elasticsearch.sh").read_text()
    found = re.search(r'^ES_VERSION="\$\{ES_VERSION:-([^}]+)\}"', text, re.MULTILINE)
    if found is None:
        raise RuntimeError('scripts/elasticsearch.sh has no ES_VERSION="${ES_VERSION:-...}" line')
    return found.group(1)


def admin_password(cert_dir: Path) -> str:
    return (cert_dir / "admin-password").read_text().strip()


def ca_context(cert_dir: Path) -> ssl.SSLContext:
    """A TLS context that trusts only the test CA in cert_dir."""
    return ssl.create_default_context(cafile=str(cert_dir / "ca.pem"))


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    """One plain HTTP(S) request: (status, decoded JSON body). HTTP errors are returned, not raised;
    connection and TLS errors are raised (urllib.error.URLError)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw) if raw else None


def _node_version(kind: str, url: str, cert_dir: Path | None) -> str:
    headers: dict[str, str] = {}
    context = None
    if cert_dir is not None:
        headers = basic_auth(ADMIN_USER, admin_password(cert_dir))
        context = ca_context(cert_dir)
    status, body = http_json(
        "GET",
        f"{url}/_nodes/_local?filter_path=nodes.*.version",
        headers=headers,
        context=context,
    )
    if status != 200:
        raise RuntimeError(f"{kind} node at {url} answered {status} for its version: {body}")
    return str(next(iter(body["nodes"].values()))["version"])


def start_node(
    kind: str,
    name: str,
    *,
    version: str | None = None,
    cert_dir: Path | None = None,
    port: int = 0,
    fresh: bool = True,
) -> NodeInfo:
    """Start node `name` of `kind` (returns when it is healthy). `version` picks one of the pinned
    OpenSearch versions (default: the script's); `cert_dir` (from make_test_certs) is required for
    "elasticsearch-secure" and refused for the other kinds."""
    script = _script(kind)
    args = [str(script), "start", name, str(port)]
    if fresh:
        args.append("--fresh")
    env_version: dict[str, str] = {}
    if version is not None:
        if kind == "opensearch":
            args += ["--version", version]
        else:
            env_version = {"ES_VERSION": version}
    if kind == "elasticsearch-secure":
        if cert_dir is None:
            raise ValueError("an elasticsearch-secure node needs cert_dir (see make_test_certs)")
        args += ["--secure", str(cert_dir)]
    elif cert_dir is not None:
        raise ValueError(f"cert_dir is only for elasticsearch-secure nodes, not {kind}")
    env = {**os.environ, **env_version} if env_version else None
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, timeout=START_TIMEOUT, env=env, check=False
        )
    except subprocess.TimeoutExpired as timeout:
        stop_node(kind, name)
        stderr = timeout.stderr.decode() if isinstance(timeout.stderr, bytes) else timeout.stderr
        raise RuntimeError(
            f"{kind} node {name!r} did not start within {START_TIMEOUT} s:\n{_tail(stderr or '')}"
        ) from None
    if result.returncode != 0:
        raise RuntimeError(
            f"{kind} node {name!r} did not start ({script.name} exited {result.returncode}):\n"
            f"{_tail(result.stderr)}"
        )
    url = result.stdout.strip().splitlines()[-1]
    return NodeInfo(kind=kind, name=name, url=url, version=_node_version(kind, url, cert_dir))


def stop_node(kind: str, name: str) -> None:
    """Stop node `name` of `kind`; nothing happens when it is not running."""
    script = _script(kind)
    result = subprocess.run(
        [str(script), "stop", name], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{kind} node {name!r} did not stop ({script.name} exited {result.returncode}):\n"
            f"{_tail(result.stderr)}"
        )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_test_certs(directory: Path, hostnames: list[str]) -> None:
    """Write a throw-away CA (ca.pem), a server certificate it signed for 127.0.0.1, localhost and
    `hostnames` (node.pem, node-key.pem; PEM, unencrypted PKCS#8 key) and a random admin-password:
    what `scripts/elasticsearch.sh start NAME --secure DIRECTORY` expects."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamsync test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    names: list[str] = []
    for host in ["localhost", "127.0.0.1", *hostnames]:
        if host not in names:
            names.append(host)
    node_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    node_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(node_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(node_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "node.pem").write_bytes(node_cert.public_bytes(pem))
    key_file = directory / "node-key.pem"
    key_file.write_bytes(
        node_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    password_file = directory / "admin-password"
    password_file.write_text(secrets.token_urlsafe(18) + "\n")
    password_file.chmod(0o600)
