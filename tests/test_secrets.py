"""engine/secrets.py: masking."""

from __future__ import annotations

import base64

import pytest

from engine.secrets import MASK, Masker, basic_credentials, forms


def test_masks_text_and_structures() -> None:
    masker = Masker(["s3cret", "s3cret-longer", "abc"])
    assert masker.mask("token s3cret-longer and s3cret") == f"token {MASK} and {MASK}"
    assert masker.mask_value({"a": ["x s3cret", 3, None], "s3cret": True}) == {"a": [f"x {MASK}", 3, None], MASK: True}
    assert masker.mask("abc stays: too short to be a secret") == "abc stays: too short to be a secret"


def test_nothing_to_mask() -> None:
    masker = Masker([])
    assert not masker
    assert masker.mask("plain") == "plain" and masker.mask_value({"a": 1}) == {"a": 1}


def test_regex_characters_in_secrets_are_literal() -> None:
    assert Masker(["a.b*c+"]).mask("a.b*c+ axbbbc") == f"{MASK} axbbbc"


SECRET = 's3cr"et\\tök en'  # a quote, a backslash, a non-ASCII letter and a space

#: the forms SECRET takes where it is shown (with the Basic user "crm-user")
SHOWN_FORMS = [
    SECRET,
    r's3cr\"et\\t\u00f6k en',  # JSON, ASCII only (json.dumps)
    r's3cr\"et\\tök en',  # JSON, UTF-8 (ensure_ascii=False)
    "s3cr%22et%5Ct%C3%B6k%20en",  # a URL path or component
    "s3cr%22et%5Ct%C3%B6k+en",  # a query string or form
    "s3cr%22et%5ct%c3%b6k+en",  # lower-case hex
    base64.b64encode(f"crm-user:{SECRET}".encode()).decode(),  # HTTP Basic, with its padding
]


@pytest.mark.parametrize("shown", SHOWN_FORMS)
def test_every_form_of_a_secret_is_masked(shown: str) -> None:
    masker = Masker([SECRET], credentials=[("crm-user", SECRET), ("other", "not a secret")])
    assert masker.mask(f"before {shown} after") == f"before {MASK} after"
    assert masker.mask_value({"k": [f"<{shown}>"]}) == {"k": [f"<{MASK}>"]}


def test_basic_credentials_are_masked_only_when_they_hold_a_secret() -> None:
    plain = base64.b64encode(b"other:not a secret").decode()
    masker = Masker([SECRET], credentials=[("other", "not a secret")])
    assert masker.mask(f"Basic {plain}") == f"Basic {plain}"
    assert basic_credentials("u", "p") == {"dTpw"}  # no padding to strip
    user_from_env = Masker(["user-from-env"], credentials=[("user-from-env", "pw")])
    assert user_from_env.mask("Basic dXNlci1mcm9tLWVudjpwdw==") == f"Basic {MASK}"


def test_forms_of_a_plain_secret_are_one() -> None:
    assert forms("abcd1234") == {"abcd1234"}
