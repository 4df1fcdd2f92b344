"""The ``requeue`` action: put an item in a named, durable work queue.

Field tools take the items through ``hookwise queue`` or ``/api/queues``. The step's
idempotency key goes with the request, so a step run twice (after a crash) counts once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from engine.errors import Fail
from engine.run.action import Action, Context
from engine.units import Duration

#: Attempts an item gets before it goes to the queue's dead list, unless a step says
#: otherwise; the same as the default retry policy's attempts (SPEC 3, defaults.retry).
DEFAULT_MAX_ATTEMPTS = 5


def _key_text(value: Any) -> Any:
    # Job ids arrive as numbers in some payloads and as strings in others; one item per
    # id either way, so the key is stored as text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class RequeueParams(BaseModel):
    """Parameters of the ``requeue`` action. An item still waiting with the same ``key``
    is updated, not duplicated."""

    model_config = ConfigDict(extra="forbid")

    queue: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=100, description="Queue name, e.g. field-techs.")
    key: Annotated[str, BeforeValidator(_key_text, json_schema_input_type=str | int), Field(min_length=1)] = Field(
        description="The item's identity in the queue (a number is stored as text)."
    )
    data: Any = Field(default=None, description="The item's payload (any JSON value).")
    delay: Duration = Field(default=0.0, description="Wait this long before the item can be claimed.")
    max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS, ge=1, description="Attempts before the item goes to the dead list."
    )


class RequeueAction(Action):
    """Queues (or updates) an item and returns ``{item_id, attempt}``."""

    name = "requeue"
    Params = RequeueParams

    def run(self, params: BaseModel, ctx: Context) -> Mapping[str, Any] | None:
        assert isinstance(params, RequeueParams)
        if ctx.store is None:
            raise Fail("requeue: no store to keep the queue in")
        item = ctx.store.requeue(
            params.queue, params.key, ctx.mask(params.data), delay=params.delay, max_attempts=params.max_attempts,
            request_id=ctx.idempotency_key,
        )
        output: dict[str, Any] = {"item_id": item.id, "attempt": item.attempts, "status": item.status}
        if item.exhausted_event is not None:
            output["exhausted_event"] = item.exhausted_event
        return output
