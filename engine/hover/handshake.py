"""Built-in rules: Hover's webhook verification handshake (SPEC 9).

Every ``hover`` source gets a rule that answers ``webhook-verification-code`` events by
calling ``PUT /api/v2/webhooks/{code}/verify`` with the account's token (POST when PUT is
answered 405; the code percent-encoded as one path segment). It is an ordinary rule, so the
call is a run like any other: retried, explained, visible; users may still match the event
in their own rules. While the account is not logged in the step waits, ten minutes at a
time, for about a day; a login makes it run at once.
"""

from __future__ import annotations

import hashlib

from ..rules.config import Config
from ..rules.rule_loader import RuleLoader
from ..rules.rules import Rule

BUILTIN_FILE = "<built-in>"

_VERIFY = """\
name: hookwise.hover-verify.{source}
description: Answers Hover's webhook verification handshake (built in).
source: {source}
event: webhook-verification-code
actions:
  - id: verify
    hover:
      method: PUT
      path: "/api/v2/webhooks/{{{{ event.code | path_segment }}}}/verify"
    retry: {{attempts: 150, backoff: 5s, max_backoff: 10m}}   # a day, for an account not logged in yet
"""


def builtin_rules(config: Config, loader: RuleLoader) -> list[Rule]:
    """The built-in rules for the sources of ``config``."""
    rules = []
    for name, source in sorted(config.settings.sources.items()):
        if source.preset == "hover":
            text = _VERIFY.format(source=name)
            version = hashlib.sha256(text.encode()).hexdigest()[:12]
            rules.append(loader.compile_text(text, BUILTIN_FILE, version))
    return rules
