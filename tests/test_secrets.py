"""engine/secrets.py: masking."""

from __future__ import annotations

from engine.secrets import MASK, Masker


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
