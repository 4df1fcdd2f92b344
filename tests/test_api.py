"""Who the API answers (SPEC 10): a bearer token when api.token is set (the scheme in any
case), else loopback clients only, judged with server.trusted_proxies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import post
from .test_proxies import TRUSTING, _trusts_loopback
from .test_receiver import CONFIG, Served


@pytest.fixture(params=["untrusted", "trusted"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path, config=CONFIG if request.param == "untrusted" else TRUSTING)
    yield s
    s.close()


def test_the_api_loopback_rule_believes_forwarding_headers_only_from_trusted_proxies(served: Served) -> None:
    url = served.url("/api/events")
    assert post(url, b"", method="GET")[0] == 200
    assert post(url, b"", {"X-Forwarded-For": "203.0.113.9"}, method="GET")[0] == 403
    assert post(url, b"", {"Forwarded": "for=203.0.113.9"}, method="GET")[0] == 403
    # Forwarded from loopback: local only when a trusted proxy says so.
    expected = 200 if _trusts_loopback(served) else 403
    assert post(url, b"", {"X-Forwarded-For": "127.0.0.1"}, method="GET")[0] == expected



@pytest.fixture
def with_token(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path, config=CONFIG + "api: {token: s3cret-api-token}\n")
    yield s
    s.close()


@pytest.mark.parametrize(("authorization", "status"), [
    ("Bearer s3cret-api-token", 200),
    ("bearer s3cret-api-token", 200),
    ("BEARER  s3cret-api-token ", 200),
    ("Bearer wrong-token", 401),
    ("Basic s3cret-api-token", 401),
    ("s3cret-api-token", 401),
    ("Bearer", 401),
    ("", 401),
])
def test_the_bearer_scheme_is_case_insensitive(with_token: Served, authorization: str, status: int) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    got, answer = post(with_token.url("/api/events"), b"", headers, method="GET")
    assert got == status
    if status == 401:
        assert isinstance(answer, dict) and answer["error"] == "unauthorized"
