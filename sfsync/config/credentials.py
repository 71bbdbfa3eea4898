"""Where a running role's credentials come from, and how they are renewed without a restart.

Why: a password rotated in Salesforce or PostgreSQL used to need a restart of every role after the config
(or the mounted secret holding it) was updated. Now a role that meets refused credentials re-reads them
and resumes on its own once they work.

Contract:
- The source is the config file the process was started with (``sfsync run <role> --config FILE`` calls
  :func:`started_from`), read again through :func:`sfsync.config.load_config`, so ``SFSYNC_*`` environment
  overrides still win over the file exactly as at start. A Kubernetes secret or ConfigMap mounted as that
  file is re-read the same way (the kubelet swaps the file; :meth:`CredentialSource.changed` sees it).
- Only credentials are taken from it: the Salesforce ``auth`` block and the PostgreSQL ``dsn`` (which holds
  the password). Every other setting keeps its value until a restart; a reload that finds other keys
  changed logs their top-level names (never values) as ignored.
- Renewal updates the process's one config object in place (:func:`apply_credentials`), so every component
  holding it (a sink, the field version store, the sync-state follower, link-back) connects with the new
  credentials on its next connect; nothing else needs to know.
- A file that cannot be read or is invalid keeps the credentials in force (logged with the problem paths);
  the role goes on retrying at its outage pace.
- :func:`credentials_of`, :func:`ignored_changes` and :func:`postgres_credentials_refused` are pure.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr

from sfsync.config.connections import SalesforceAuth

if TYPE_CHECKING:
    from sfsync.config.loading import SfsyncConfig

log = logging.getLogger("sfsync.config.credentials")

Side = Literal["salesforce", "postgres"]

#: libpq reports a refused login without a SQLSTATE at connect (psycopg's ``OperationalError.sqlstate`` is
#: ``None``): these server / client messages mean class 28 (invalid authorization: 28P01, 28000)
_PG_REFUSED = re.compile(
    r"password authentication failed|authentication failed for user|no pg_hba\.conf entry|"
    r"no password supplied|role \"[^\"]*\" does not exist|password is required",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PostgresCredentials:
    """What PostgreSQL authenticates: the DSN (user and password live in it). ``repr`` hides it."""

    dsn: SecretStr


def credentials_of(cfg: SfsyncConfig) -> tuple[SalesforceAuth, PostgresCredentials]:
    """The credentials of a loaded config (pure)."""
    return cfg.salesforce.auth, PostgresCredentials(cfg.postgres.dsn)


def _same_auth(a: SalesforceAuth, b: SalesforceAuth) -> bool:
    def plain(x: SalesforceAuth) -> dict[str, object]:
        return {k: (v.get_secret_value() if isinstance(v, SecretStr) else v) for k, v in x}

    return plain(a) == plain(b)


def _plain(cfg: SfsyncConfig) -> dict[str, object]:
    data = cfg.model_dump(mode="json")
    data["salesforce"].pop("auth", None)
    data["postgres"].pop("dsn", None)
    return data


def ignored_changes(running: SfsyncConfig, fresh: SfsyncConfig) -> list[str]:
    """Top-level keys (``objects``, ``salesforce``, ...) whose non-credential settings differ (pure).

    A renewal never applies them (a changed mapping needs a restart); the caller logs these names.
    """
    a, b = _plain(running), _plain(fresh)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def postgres_credentials_refused(sqlstate: str | None, message: str) -> bool:
    """Whether a PostgreSQL error means the login was refused (SQLSTATE class 28, or libpq's text at connect)."""
    if sqlstate:
        return sqlstate.startswith("28")
    return bool(_PG_REFUSED.search(message))


def reload_credentials(path: Path | str) -> tuple[SalesforceAuth, PostgresCredentials]:
    """Read the config file again (env overrides applied) and return only its credentials.

    Raises :class:`sfsync.config.ConfigError` when the file is missing or invalid.
    """
    from sfsync.config.loading import load_config

    return credentials_of(load_config(path, require_file=True))


def apply_credentials(cfg: SfsyncConfig, side: Side, auth: SalesforceAuth, pg: PostgresCredentials) -> bool:
    """Put the new credentials of ``side`` into ``cfg`` in place; True when they differ from those in force."""
    if side == "salesforce":
        if _same_auth(cfg.salesforce.auth, auth):
            return False
        cfg.salesforce.auth = auth
        return True
    if cfg.postgres.dsn.get_secret_value() == pg.dsn.get_secret_value():
        return False
    cfg.postgres.dsn = pg.dsn
    return True


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows the symlink a mounted secret is swapped through
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class CredentialSource:
    """The config file of this process, re-read on a credential failure (module contract). Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen = _fingerprint(self.path)

    def __repr__(self) -> str:
        return f"CredentialSource({str(self.path)!r})"

    def changed(self) -> bool:
        """Whether the file was replaced or written since the last :meth:`renew` (one ``stat``, no read)."""
        return _fingerprint(self.path) != self._seen

    def renew(self, cfg: SfsyncConfig, side: Side) -> bool:
        """Re-read the file; when ``side``'s credentials differ from those in ``cfg``, put them in (True).

        Other changed settings are logged as ignored (names only). An unreadable or invalid file changes
        nothing (False) and is logged with its problem paths, never values.
        """
        from sfsync.config.loading import ConfigError, load_config

        with self._lock:
            self._seen = _fingerprint(self.path)
            try:
                fresh = load_config(self.path, require_file=True)
            except ConfigError as e:
                log.warning("%s credentials not renewed: %s is invalid (%s)", side, self.path,
                            "; ".join(str(p) for p in e.problems))
                return False
            ignored = ignored_changes(cfg, fresh)
            if ignored:
                log.warning("%s changed %s too: ignored until a restart (only credentials are renewed)",
                            self.path, ", ".join(ignored))
            auth, pg = credentials_of(fresh)
            renewed = apply_credentials(cfg, side, auth, pg)
        if renewed:
            log.info("%s credentials renewed from %s", side, self.path)
        return renewed


_process_source: CredentialSource | None = None


def started_from(path: Path | str | None) -> None:
    """Remember the config file this process was started with (``sfsync run``); ``None`` forgets it."""
    global _process_source
    _process_source = CredentialSource(path) if path is not None else None


def process_source() -> CredentialSource | None:
    """The config file of this process, when it was started from one (else credentials are never renewed)."""
    return _process_source
