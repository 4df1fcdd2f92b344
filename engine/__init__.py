"""hookwise: an event-to-workflow rules engine.

The public face for plugin authors::

    from engine import Action, Context, Retry, Fail

    class CrmAction(Action):
        name = "crm"

        class Params(pydantic.BaseModel):
            contact: str

        def run(self, params, ctx):
            ...                       # raise Retry(after=30) or Fail("why") on failure
            return {"id": "..."}
"""

from .errors import Fail, Retry
from .run.action import Action, Context

__all__ = ["Action", "Context", "Fail", "Retry"]
