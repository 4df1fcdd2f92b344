"""The ``email`` action: send a message through the ``smtp:`` server of the config.

Its ``run`` comes later; until then the base class's ``run`` refuses to run.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from engine.action import Action

from ._params import Headers, at_least_one, one_or_many


def _address(value: str) -> str:
    # Loose on purpose: the SMTP server is the judge; this catches "{{ }}" gone wrong,
    # a name without an address, and line breaks (header injection).
    if "\r" in value or "\n" in value:
        raise ValueError("an email address must not contain a line break")
    if "@" not in parseaddr(value)[1]:
        raise ValueError("not an email address (expected 'user@example.com' or 'Name <user@example.com>')")
    return value


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain a line break")
    return value


Address = Annotated[str, AfterValidator(_address)]
Addresses = Annotated[list[Address], BeforeValidator(one_or_many, json_schema_input_type=Address | list[Address])]


class EmailParams(BaseModel):
    """Parameters of the ``email`` action: at least one of ``text`` and ``html``
    (both make a multipart/alternative message)."""

    model_config = ConfigDict(extra="forbid")

    to: Annotated[Addresses, Field(min_length=1)] = Field(description="Recipient address, or a list of them (at least one).")
    cc: Addresses | None = Field(default=None, description="Carbon-copy address or list of addresses.")
    bcc: Addresses | None = Field(default=None, description="Blind-copy address or list of addresses (not shown in the message).")
    reply_to: Address | None = Field(default=None, description="The Reply-To address.")
    subject: Annotated[str, AfterValidator(_one_line)] = Field(description="The subject line.")
    text: str | None = Field(default=None, description="The plain-text body.")
    html: str | None = Field(default=None, description="The HTML body.")
    headers: Headers | None = Field(default=None, description="Extra message headers.")

    @model_validator(mode="after")
    def _has_body(self) -> EmailParams:
        at_least_one(self, "text", "html")
        return self


class EmailAction(Action):
    """Sends one email and returns ``{message_id}``."""

    name = "email"
    Params = EmailParams
