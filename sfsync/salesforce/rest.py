"""A simple-salesforce session that owns its token: re-authenticates once on an expired session.

Every request carries ``Sforce-Call-Options: client=<call_options_client>``
so Salesforce marks sfsync's own writes (CDC ``changeOrigin``) and the
processors can drop their echoes. API usage from ``Sforce-Limit-Info`` is
exposed for the budget logic.

Numbers are exact both ways (:mod:`sfsync.salesforce.values`): answers are
parsed with fractions as ``Decimal`` (simple-salesforce's ``parse_float``), and
a ``json=`` body of :meth:`SalesforceClient.restful` is written by
``dumps_exact`` (a ``Decimal`` as a JSON number with all its digits) instead of
requests' ``json.dumps``, which refuses Decimals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession

from sfsync.config import SalesforceConfig
from sfsync.salesforce.auth import Token, fetch_token
from sfsync.salesforce.values import dumps_exact

T = TypeVar("T")


class SalesforceClient:
    """Thread-safe holder of one authenticated simple-salesforce instance."""

    def __init__(self, cfg: SalesforceConfig, pool_size: int = 8) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._http = requests.Session()
        self._http.verify = str(cfg.ca_bundle) if cfg.ca_bundle else True
        if cfg.ca_bundle:
            # else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment would replace ``verify``
            self._http.trust_env = False
        self._http.headers["Sforce-Call-Options"] = f"client={cfg.call_options_client}"
        adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self._http.mount("https://", adapter)
        self._http.mount("http://", adapter)
        self._sf: Salesforce | None = None
        self._token: Token | None = None
        self.auth_count = 0

    def __repr__(self) -> str:
        return f"SalesforceClient({self.cfg.login_url!r}, flow={self.cfg.auth.flow.value})"

    def _login(self) -> Salesforce:
        token = fetch_token(self.cfg, self._http)
        self._token = token
        self.auth_count += 1
        self._sf = Salesforce(instance_url=token.instance_url, session_id=token.access_token,
                              session=self._http, version=self.cfg.api_version, parse_float=Decimal)
        return self._sf

    @property
    def sf(self) -> Salesforce:
        with self._lock:
            return self._sf or self._login()

    @property
    def token(self) -> Token:
        _ = self.sf
        assert self._token is not None
        return self._token

    def reauthenticate(self, stale: Salesforce | None = None) -> Salesforce:
        """Get a new token unless another thread already replaced ``stale``."""
        with self._lock:
            if stale is not None and self._sf is not stale:
                assert self._sf is not None
                return self._sf
            return self._login()

    def drop_session(self) -> None:
        """Forget the token: the next call authenticates again with ``cfg.auth`` as it is then (credentials
        renewed in place, :mod:`sfsync.config.credentials`)."""
        with self._lock:
            self._sf = None
            self._token = None

    def call(self, fn: Callable[[Salesforce], T]) -> T:
        """Run ``fn``; on ``INVALID_SESSION_ID`` re-authenticate once and run it again.

        A failed re-authentication raises :class:`~sfsync.salesforce.auth.AuthenticationFailed`.
        """
        sf = self.sf
        try:
            return fn(sf)
        except SalesforceExpiredSession:
            return fn(self.reauthenticate(sf))

    def usage(self) -> tuple[int, int] | None:
        """(used, limit) of daily API requests from the last ``Sforce-Limit-Info`` seen."""
        sf = self._sf
        if sf is None:
            return None
        usage = sf.api_usage.get("api-usage")
        return (int(usage.used), int(usage.total)) if usage is not None else None

    def restful(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        """``sf.restful`` through :meth:`call` (JSON answer, ``None`` for 204); a ``json=`` body is sent as
        exact JSON (see module docstring)."""
        kwargs.setdefault("timeout", self.cfg.request_timeout_s)
        if "json" in kwargs:
            body = kwargs.pop("json")
            kwargs["data"] = dumps_exact(body, separators=(",", ":")).encode()
            kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Type": "application/json"}
        return self.call(lambda sf: sf.restful(path, method=method, **kwargs))

    def describe(self, sobject: str) -> dict[str, Any]:
        """``GET sobjects/{sobject}/describe`` (one API call; callers cache it)."""
        result = self.restful(f"sobjects/{sobject}/describe")
        return dict(result)

    def query_records(self, soql: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every record of a SOQL query, following ``nextRecordsUrl`` (``queryAll`` when ``include_deleted``)."""
        result = self.call(lambda sf: sf.query_all(soql, include_deleted=include_deleted))
        return [dict(r) for r in result.get("records", [])]

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._http.close()
