"""The few Prefect REST calls the doctor makes, over plain httpx.

Not Prefect's client: that one reads PREFECT_* settings and profiles, retries, and hides which request
failed, where the doctor must use exactly the URL and credentials it was given and say what answered.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from vault_ingest.errors import APIError
from vault_ingest.urls import mask_url

TIMEOUT_SECONDS = 10.0


class PrefectAPI:
    def __init__(self, api_url: str, auth: str | None, transport: httpx.BaseTransport | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        parts = urlsplit(self.api_url)
        # `/ui-settings` belongs to the UI app, mounted beside the API at the server root.
        root_path = parts.path.removesuffix("/api") if parts.path.endswith("/api") else ""
        self.root_url = urlunsplit((parts.scheme, parts.netloc, root_path, "", ""))
        # Prefect's client sends PREFECT_API_AUTH_STRING as is, and the server compares the whole string.
        self._auth_headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
        self._http = httpx.Client(transport=transport, timeout=TIMEOUT_SECONDS, follow_redirects=False)

    def __enter__(self) -> "PrefectAPI":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, body: Any = None, authenticate: bool = True,
                at_root: bool = False) -> httpx.Response:
        """The raw answer to `method path` under the API (or the server root); APIError if none came."""
        url = (self.root_url if at_root else self.api_url) + path
        try:
            return self._http.request(method, url, json=body, headers=self._auth_headers if authenticate else {})
        except httpx.HTTPError as exc:
            raise APIError(f"{method} {mask_url(url)} got no answer: {exc or type(exc).__name__}") from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON of a successful authenticated request; APIError naming the request otherwise."""
        response = self.request(method, path, body=body)
        if response.status_code == 204:
            return None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise APIError(f"{method} {mask_url(self.api_url + path)} answered with something other than JSON: "
                               f"{response.text[:200].strip()!r}") from None
        raise APIError(
            f"{method} {mask_url(self.api_url + path)} answered HTTP {response.status_code}: "
            f"{response.text[:200].strip() or response.reason_phrase}"
        )
