"""TLS material for the emulator: a private CA (trustme) and a server certificate for the loopback names.

``make_certificates(state_dir)`` writes ``ca.pem`` (give it to clients as their trust store),
``server.pem`` (certificate chain) and ``server-key.pem`` into ``state_dir`` and returns their paths.
A new CA is made at every start.

trustme comes with the ``emulator`` extra, not with sfsync's core dependencies: without it, importing this
module raises :class:`MissingEmulatorExtra` (a ``ModuleNotFoundError``) that says what to install.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXTRA_HINT = "the emulator needs the 'emulator' extra: pip install 'sfsync[emulator]'"


class MissingEmulatorExtra(ModuleNotFoundError):
    """trustme (from the ``emulator`` extra) is not installed."""


try:
    import trustme
except ModuleNotFoundError as exc:
    if exc.name != "trustme":  # trustme is there but broken: let its own error through
        raise
    raise MissingEmulatorExtra(f"{EXTRA_HINT} (trustme is not installed)", name="trustme") from exc

HOSTNAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Certificates:
    """Paths of the written PEM files."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(state_dir: Path) -> Certificates:
    """Create a CA and a server certificate for HOSTNAMES; write them under ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="sfsync emulator")
    server = ca.issue_cert(*HOSTNAMES)
    paths = Certificates(ca=state_dir / "ca.pem", cert=state_dir / "server.pem", key=state_dir / "server-key.pem")
    ca.cert_pem.write_to_path(str(paths.ca))
    server.private_key_pem.write_to_path(str(paths.key))
    paths.key.chmod(0o600)
    with paths.cert.open("wb") as handle:
        for blob in server.cert_chain_pems:
            handle.write(blob.bytes())
    return paths
