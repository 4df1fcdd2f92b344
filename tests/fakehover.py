"""A fake Hover API served on loopback by a real HTTP server, for tests.

It honours the parts of Hover's contract hookwise relies on, with the shapes shown on
developers.hover.to where the docs show them:

- OAuth (a Doorkeeper server): ``GET /oauth/authorize`` redirects to ``redirect_uri`` with a
  ``code`` and the ``state`` it was given (or, when the user denies access, ``deny``, with
  ``error=access_denied``); ``POST /oauth/token`` (form or JSON body) takes ``grant_type=authorization_code``
  or ``refresh_token`` with ``client_id``/``client_secret`` and answers ``{access_token,
  token_type: "Bearer", expires_in: 7200, refresh_token, scope, created_at, owner_id,
  owner_type}``. Refresh tokens rotate: a used one dies with its access token, and a second
  use answers 400 ``invalid_grant``.
- ``/api/...`` needs ``Authorization: Bearer``: 401 ``invalid_token`` for an unknown, expired
  or revoked token; 429 with ``Retry-After`` past ``rate_limit`` requests per minute per token.
- Webhooks: register (``{"webhook": {"url", "content_type"}}`` -> 201 with ``id`` and
  ``hmac_secret``), list (``{"pagination": {...}, "results": [...]}``), verify by code
  (``PUT``, or ``POST`` as Hover's older guide has it: ``verify_method`` says which one
  this fake takes, the other is answered 405; 200, empty body), delete (204).
- Jobs: ``GET /api/v3/jobs`` and ``/api/v3/jobs/{id}`` (with ``models`` and their artifact
  links; 404 for an unknown id), a model's ``measurements.json``.
- Capture requests: create (which makes a draft job), list, show.

Tests drive it with :meth:`authorize`, :meth:`expire_access_tokens`, :meth:`fail_next`,
:meth:`on_next_request` and :meth:`add_job`, and read its counters and state.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

Answer = tuple[int, Any, dict[str, str]]

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"
REDIRECT_URI = "https://hookwise.test/oauth/callback"
ORG_ID = 492855


@dataclass
class Grant:
    """An access token and its refresh token: one record, as Doorkeeper keeps them."""

    access_token: str
    refresh_token: str
    expires_at: float
    revoked: bool = False


@dataclass(frozen=True)
class ApiCall:
    method: str
    path: str
    token: str | None
    status: int


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeHover:
    """The fake; ``url`` is its base URL (``hover.base_url``). Use as a context manager or
    call :meth:`close`."""

    def __init__(
        self, *, rate_limit: int = 120, access_ttl: float = 7200.0, clock: Callable[[], float] = time.time,
        token_delay: float = 0.0, post_verifications: bool = False,
        client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET, redirect_uri: str = REDIRECT_URI,
        port: int = 0, verify_method: str = "PUT",
    ) -> None:
        self.rate_limit, self.access_ttl, self.clock = rate_limit, access_ttl, clock
        #: seconds a refresh takes: widens the window in which refreshes can race
        self.token_delay = token_delay
        #: POST the webhook-verification-code event to a registered URL, as Hover does
        self.post_verifications = post_verifications
        self.client_id, self.client_secret, self.redirect_uri = client_id, client_secret, redirect_uri
        #: the method the verification endpoint takes (the other one is answered 405)
        self.verify_method = verify_method
        #: the user clicks "Deny" on the authorize page
        self.deny = False
        self.lock = threading.RLock()
        self.grants: list[Grant] = []
        self.codes: dict[str, str] = {}  # authorization code -> its redirect_uri
        self.refreshes = 0  #: successful refresh_token grants
        self.invalid_grants = 0  #: refused grants (a dead refresh token, a used code)
        self.unauthorized = 0  #: API calls answered 401
        self.calls: list[ApiCall] = []
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.verification_codes: dict[str, int] = {}  # code -> webhook id
        self.delivered: list[tuple[str, dict[str, Any]]] = []  # verification events posted
        self.jobs: dict[int, dict[str, Any]] = {}
        self.capture_requests: list[dict[str, Any]] = []
        self._failures: deque[int] = deque()
        self._hooks: deque[Callable[[], object]] = deque()
        self._windows: dict[str, deque[float]] = {}
        self._ids = iter(range(10_000, 1_000_000))
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHover:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- controls for tests -----------------------------------------------------------

    def authorize(self, redirect_uri: str | None = None) -> str:
        """An authorization code, as if the user had clicked "Allow"."""
        code = secrets.token_urlsafe(12)
        with self.lock:
            self.codes[code] = redirect_uri or self.redirect_uri
        return code

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now (their refresh tokens stay good)."""
        with self.lock:
            for grant in self.grants:
                grant.expires_at = min(grant.expires_at, self.clock() - 1)

    def revoke_all(self) -> None:
        """The user withdrew the integration's access: every token dies."""
        with self.lock:
            for grant in self.grants:
                grant.revoked = True

    def fail_next(self, count: int, status: int = 503) -> None:
        """The next ``count`` authenticated API calls answer ``status``."""
        with self.lock:
            self._failures.extend([status] * count)

    def on_next_request(self, hook: Callable[[], object]) -> None:
        """Run ``hook`` when the next API call arrives, before it is answered."""
        with self.lock:
            self._hooks.append(hook)

    def refresh_token_alive(self, token: str) -> bool:
        with self.lock:
            return any(g.refresh_token == token and not g.revoked for g in self.grants)

    def access_token_valid(self, token: str) -> bool:
        return self._grant_for(token) is not None

    def api_calls(self, path: str = "") -> list[ApiCall]:
        with self.lock:
            return [c for c in self.calls if c.path.startswith(path)]

    def add_job(
        self, job_id: int, *, state: str = "completed", models: int = 1, failed_models: int = 0
    ) -> dict[str, Any]:
        """A job as ``GET /api/v3/jobs/{id}`` shows it, with ``models`` models (the last
        ``failed_models`` of them failed)."""
        job = _job(
            self.url, job_id, state,
            [_model(self.url, job_id * 10 + i, failed=i >= models - failed_models) for i in range(models)]
        )
        with self.lock:
            self.jobs[job_id] = job
        return job

    # --- dispatch -----------------------------------------------------------------------

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        parts = urlsplit(target)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if path == "/oauth/authorize" and method == "GET":
            return self._authorize(query)
        if path == "/oauth/token" and method == "POST":
            return self._token(_form_or_json(headers, body))
        if path.startswith("/api/"):
            return self._api(method, path, query, headers, body)
        return 404, {"error": "not found"}, {}

    def _authorize(self, query: dict[str, str]) -> Answer:
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return 400, {"error": "invalid_request"}, {}
        if query.get("redirect_uri") != self.redirect_uri:
            return 400, {"error": "invalid_redirect_uri"}, {}
        extra = {"state": query["state"]} if "state" in query else {}
        if self.deny:
            return 302, None, {"Location": f"{self.redirect_uri}?{urlencode({'error': 'access_denied', **extra})}"}
        code = self.authorize()
        return 302, None, {"Location": f"{self.redirect_uri}?{urlencode({'code': code, **extra})}"}

    def _token(self, form: dict[str, Any]) -> Answer:
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed."}, {}
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._code_grant(str(form.get("code")), str(form.get("redirect_uri")))
        if grant_type == "refresh_token":
            if self.token_delay:
                time.sleep(self.token_delay)
            return self._refresh_grant(str(form.get("refresh_token")))
        return 400, {"error": "unsupported_grant_type"}, {}

    def _code_grant(self, code: str, redirect_uri: str) -> Answer:
        with self.lock:
            if self.codes.get(code) != redirect_uri:
                self.invalid_grants += 1
                return 400, _INVALID_GRANT, {}
            del self.codes[code]  # single use
            return 200, self._issue(), {}

    def _refresh_grant(self, refresh_token: str) -> Answer:
        with self.lock:
            old = next((g for g in self.grants if g.refresh_token == refresh_token and not g.revoked), None)
            if old is None:
                self.invalid_grants += 1
                return 400, _INVALID_GRANT, {}
            old.revoked = True  # rotation: the refresh token dies once used, with its access token
            self.refreshes += 1
            return 200, self._issue(), {}

    def _issue(self) -> dict[str, Any]:
        grant = Grant(secrets.token_urlsafe(24), secrets.token_urlsafe(18), self.clock() + self.access_ttl)
        self.grants.append(grant)
        return {
            "access_token": grant.access_token, "token_type": "Bearer", "expires_in": int(self.access_ttl),
            "refresh_token": grant.refresh_token, "scope": "all", "created_at": int(self.clock()),
            "owner_id": ORG_ID, "owner_type": "orgs",
        }

    def _grant_for(self, token: str | None) -> Grant | None:
        with self.lock:
            grant = next((g for g in self.grants if g.access_token == token), None)
            if grant is None or grant.revoked or grant.expires_at <= self.clock():
                return None
            return grant

    def _api(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes) -> Answer:
        with self.lock:
            hook = self._hooks.popleft() if self._hooks else None
        if hook is not None:
            hook()
        auth = headers.get("authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        status, answer, extra = self._guarded(method, path, query, token, body)
        with self.lock:
            self.calls.append(ApiCall(method, path, token, status))
        return status, answer, extra

    def _guarded(self, method: str, path: str, query: dict[str, str], token: str | None, body: bytes) -> Answer:
        if self._grant_for(token) is None:
            with self.lock:
                self.unauthorized += 1
            return 401, {"error": "invalid_token", "error_description": "The access token is invalid"}, {
                "WWW-Authenticate": 'Bearer realm="Doorkeeper", error="invalid_token"'}
        assert token is not None
        wait = self._rate(token)
        if wait is not None:
            return 429, {"error": "Rate Limit Exceeded"}, {"Retry-After": str(wait)}
        with self.lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            return failure, {"error": "Internal Server Error"}, {}
        return self._route(method, path, query, _json(body))

    def _rate(self, token: str) -> int | None:
        """None when the call is within the limit, else the seconds until it would be."""
        with self.lock:
            window = self._windows.setdefault(token, deque())
            now = self.clock()
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= self.rate_limit:
                return max(1, math.ceil(window[0] + 60 - now))
            window.append(now)
            return None

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Answer:
        for pattern, verb, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and verb == method:
                with self.lock:
                    return handler(query, body, *match.groups())
        return 404, {"error": "Not Found"}, {}

    def _routes(self) -> list[tuple[str, str, Callable[..., Answer]]]:
        return [
            (r"/api/v2/webhooks", "GET", self._list_webhooks),
            (r"/api/v2/webhooks", "POST", self._register_webhook),
            (r"/api/v2/webhooks/([^/]+)/verify", "PUT",
             lambda q, body, code: self._verify_webhook(q, body, code, "PUT")),
            (r"/api/v2/webhooks/([^/]+)/verify", "POST",
             lambda q, body, code: self._verify_webhook(q, body, code, "POST")),
            (r"/api/v2/webhooks/(\d+)", "DELETE", self._delete_webhook),
            (r"/api/v3/jobs", "GET", self._list_jobs),
            (r"/api/v3/jobs/(\d+)", "GET", self._show_job),
            (r"/api/v3/models/(\d+)/artifacts/measurements\.json", "GET", self._measurements),
            (r"/api/v2/capture_requests", "POST", self._create_capture_request),
            (r"/api/v2/capture_requests", "GET", self._list_capture_requests),
            (r"/api/v2/capture_requests/([^/]+)", "GET", self._show_capture_request),
        ]

    # --- webhooks ---------------------------------------------------------------------

    def _register_webhook(self, query: dict[str, str], body: Any, *groups: str) -> Answer:
        hook = body.get("webhook") if isinstance(body, dict) else None
        if not isinstance(hook, dict):
            return 422, {"errors": {"webhook": ["is missing"]}}, {}
        url = hook.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return 422, {"errors": {"url": ["is invalid"]}}, {}
        webhook_id, now = next(self._ids), _now_iso()
        record = {
            "id": webhook_id, "owner_type": "Org", "owner_id": ORG_ID, "url": url, "created_at": now, "updated_at": now,
            "verified_at": None, "hmac_secret": secrets.token_urlsafe(48), "last_error": None,
            "content_type": hook.get("content_type", "json"),
        }
        self.webhooks[webhook_id] = record
        code = secrets.token_hex(16)
        self.verification_codes[code] = webhook_id
        if self.post_verifications:
            event = {"event": "webhook-verification-code", "code": code, "webhook_id": webhook_id}
            threading.Thread(target=self._deliver, args=(url, event), daemon=True).start()
        return 201, dict(record), {}

    def _deliver(self, url: str, event: dict[str, Any]) -> None:
        request = urllib.request.Request(
            url, data=json.dumps(event).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except OSError:
            pass  # Hover notes the failure as the webhook's last_error
        with self.lock:
            self.delivered.append((url, event))

    def add_webhook(self, url: str) -> tuple[int, str]:
        """A webhook as registering it makes one, without an API call (the account need
        not be logged in): its id and verification code."""
        with self.lock:
            webhook_id, now = next(self._ids), _now_iso()
            self.webhooks[webhook_id] = {
                "id": webhook_id, "owner_type": "Org", "owner_id": ORG_ID, "url": url, "created_at": now,
                "updated_at": now, "verified_at": None, "hmac_secret": secrets.token_urlsafe(48), "last_error": None,
                "content_type": "json",
            }
            code = secrets.token_hex(16)
            self.verification_codes[code] = webhook_id
        return webhook_id, code

    def code_for(self, webhook_id: int) -> str:
        """The verification code Hover posted (or would post) for ``webhook_id``."""
        with self.lock:
            return next(c for c, w in self.verification_codes.items() if w == webhook_id)

    def _list_webhooks(self, query: dict[str, str], body: Any, *groups: str) -> Answer:
        return 200, _paginate(list(self.webhooks.values()), query), {}

    def _verify_webhook(self, query: dict[str, str], body: Any, code: str, method: str = "PUT") -> Answer:
        if method != self.verify_method:
            return 405, {"error": "Method Not Allowed"}, {"Allow": self.verify_method}
        webhook_id = self.verification_codes.get(code)
        if webhook_id is None or webhook_id not in self.webhooks:
            return 404, {"error": "Not Found"}, {}
        self.webhooks[webhook_id].update(verified_at=_now_iso(), updated_at=_now_iso())
        return 200, None, {}

    def _delete_webhook(self, query: dict[str, str], body: Any, webhook_id: str) -> Answer:
        if self.webhooks.pop(int(webhook_id), None) is None:
            return 404, {"error": "Not Found"}, {}
        return 204, None, {}

    # --- jobs and capture requests ----------------------------------------------------

    def _list_jobs(self, query: dict[str, str], body: Any, *groups: str) -> Answer:
        return 200, _paginate(list(self.jobs.values()), query), {}

    def _show_job(self, query: dict[str, str], body: Any, job_id: str) -> Answer:
        job = self.jobs.get(int(job_id))
        return (200, job, {}) if job is not None else (404, {"error": "Not Found"}, {})

    def _measurements(self, query: dict[str, str], body: Any, model_id: str) -> Answer:
        for job in self.jobs.values():
            for model in job["models"]:
                if model["id"] == int(model_id) and model["state"] == "complete":
                    return 200, _measurement_json(model["id"], query.get("version", "summarized_json")), {}
        return 404, {"error": "Not Found"}, {}

    def _create_capture_request(self, query: dict[str, str], body: Any, *groups: str) -> Answer:
        request = body.get("capture_request") if isinstance(body, dict) else None
        errors = _capture_request_errors(body, query)
        if errors:
            return 422, {"errors": errors}, {}
        assert isinstance(request, dict)
        job_id = next(self._ids)
        self.jobs[job_id] = _job(self.url, job_id, "draft", [])
        record = {
            "id": str(next(self._ids)), "identifier": secrets.token_urlsafe(5), "state": "new",
            "capturing_user_name": request["capturing_user_name"],
            "capturing_user_email": request["capturing_user_email"],
            "capturing_user_phone": request.get("capturing_user_phone"), "capturing_user_id": None,
            "requesting_user_id": str(body.get("current_user_id") or query.get("current_user_id") or "135507"),
            "claim_number": request.get("claim_number"), "signup_type": request.get("signup_type", "homeowner"),
            "job_attributes": {
                **request["job_attributes"], "deliverable_id": str(request["job_attributes"].get("deliverable_id", 3))
            },
            "pending_job_id": job_id, "created_at": _now_iso(),
        }
        self.capture_requests.append(record)
        return 201, record, {}

    def _list_capture_requests(self, query: dict[str, str], body: Any, *groups: str) -> Answer:
        return 200, _paginate(self.capture_requests, query), {}

    def _show_capture_request(self, query: dict[str, str], body: Any, identifier: str) -> Answer:
        found = next((c for c in self.capture_requests if identifier in (c["identifier"], c["id"])), None)
        return (200, found, {}) if found is not None else (404, {"error": "Not Found"}, {})


_INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The provided authorization grant is invalid, expired, revoked, does not match the "
    "redirection URI used in the authorization request, or was issued to another client.",
}


def _handler(fake: FakeHover) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer, extra = fake.answer(self.command, self.path, headers, body)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _form_or_json(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    if headers.get("content-type", "").startswith("application/json"):
        parsed = _json(body)
        return parsed if isinstance(parsed, dict) else {}
    return {k: v[-1] for k, v in parse_qs(body.decode()).items()}


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        return None


def _paginate(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    """Hover's list wrapper: ``{"pagination": {current_page, total_pages, total}, "results"}``."""
    page, per = max(1, int(query.get("page", 1))), max(1, min(100, int(query.get("per_page", query.get("per", 25)))))
    return {
        "pagination": {"current_page": page, "total_pages": max(1, math.ceil(len(items) / per)), "total": len(items)},
        "results": items[(page - 1) * per: page * per],
    }


def _capture_request_errors(body: Any, query: dict[str, str]) -> dict[str, list[str]]:
    request = body.get("capture_request") if isinstance(body, dict) else None
    if not isinstance(request, dict):
        return {"capture_request": ["is missing"]}
    errors = {k: ["can't be blank"] for k in ("capturing_user_name", "capturing_user_email") if not request.get(k)}
    attributes = request.get("job_attributes")
    if not isinstance(attributes, dict) or not attributes.get("location_line_1"):
        errors["job_attributes.location_line_1"] = ["can't be blank"]
    users = ("current_user_email", "current_user_id")
    if not any(body.get(k) or query.get(k) for k in users):
        errors["current_user"] = ["current_user_email or current_user_id is required"]
    return errors


def _model(base: str, model_id: int, *, failed: bool) -> dict[str, Any]:
    artifacts = [] if failed else [
        {
            "name": "measurements_json",
            "url": f"{base}/api/v3/models/{model_id}/artifacts/measurements.json?version=full_json"
        },
        {
            "name": "measurements_summary_json",
            "url": f"{base}/api/v3/models/{model_id}/artifacts/measurements.json?version=summarized_json"
        },
        {"name": "measurements_pdf", "url": f"{base}/api/v3/models/{model_id}/artifacts/measurements.pdf"},
    ]
    return {
        "id": model_id, "name": None if model_id % 10 == 0 else f"Structure {model_id % 10 + 1}",
        "state": "failed" if failed else "complete", "deliverable": "complete",
        "failure_reason": "insufficient_images" if failed else None,
        "model_url": f"{base}/3d/models/{model_id}", "artifacts": artifacts,
        "images": [{"id": model_id * 100 + i, "url": f"{base}/api/v3/images/{model_id * 100 + i}"} for i in range(2)],
    }


def _job(base: str, job_id: int, state: str, models: list[dict[str, Any]]) -> dict[str, Any]:
    now = _now_iso()
    return {
        "id": job_id, "name": f"Job {job_id}", "reconstruction_state": state, "external_identifier": f"EXT-{job_id}",
        "org": {"id": ORG_ID},
        "address": {
            "location_line_1": "4312 Meadow Drive", "location_line_2": "", "city": "Santa Maria", "region": "CA",
            "postal_code": "93455", "country": "US", "latitude": "34.8784998", "longitude": "-120.4139807",
        },
        "customer": {"first_name": None, "name": None, "email": None, "phone": None},
        "captures": [
            {"id": job_id + 1, "state": state, "type": "sparse_exterior", "deliverable": "complete", "created_at": now}
        ],
        "models": models, "created_at": now, "updated_at": now,
    }


def _measurement_json(model_id: int, version: str) -> dict[str, Any]:
    return {
        "version": version, "model_id": model_id,
        "summary": {"roof": {"area": 2890.5, "pitch": "6/12", "facets": 12}, "siding": {"area": 2104.0}},
    }


def main() -> None:
    """``python -m tests.fakehover``: the fake Hover (and a CRM that prints what it gets)
    on loopback, to follow the README's Hover walkthrough without a Hover account."""
    import argparse

    from tests.support import Sink

    parser = argparse.ArgumentParser(prog="python -m tests.fakehover", description=main.__doc__)
    parser.add_argument(
        "--port", type=int, default=8900, help="the fake Hover's port (the CRM listens on the next one)"
    )
    parser.add_argument(
        "--redirect-uri", default="http://127.0.0.1:8000/hover/callback", help="the integration's redirect URI"
    )
    args = parser.parse_args()
    hover = FakeHover(port=args.port, redirect_uri=args.redirect_uri, post_verifications=True)
    job = hover.add_job(19402492)
    job["customer"].update(name="Ada", email="ada@example.com")

    def crm(hit: Any) -> tuple[int, str]:
        print(f"CRM got {hit.method} {hit.path}: {hit.body.decode(errors='replace')[:300]}", flush=True)
        return 201, '{"id": "crm-1"}'

    sink = Sink(crm, port=args.port + 1)
    print(f"fake Hover on {hover.url}: client_id {hover.client_id}, client_secret {hover.client_secret},"
          f" redirect_uri {args.redirect_uri}")
    print(f"a CRM on {sink.url}/jobs; job 19402492 exists (customer ada@example.com). Ctrl-C stops.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.close()
        hover.close()


if __name__ == "__main__":
    main()
