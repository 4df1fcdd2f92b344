"""Running one step, in a step thread: render its params, run its action, and make the
result the worker records (masked, with the next step's delay, or the failure with its retry).

Also what the worker asks of a step's rule: the rule of a stored run's version (compiled
again from the stored text after a reload), its time limit, and the host it will call when
the params tell it before rendering.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ..errors import ConfigError, Defer, Fail, ParamsError, RenderError, Retry
from ..hover.client import HoverClient, SharedClient
from ..ids import derived_id
from ..ops.logs import step_fields
from ..rules.loader import Loaded
from ..rules.rule_loader import RuleLoader
from ..rules.rules import Rule
from ..store import Incoming, WorkerStore
from .action import Context
from .delivery import Delivery
from .flights import InFlight
from .plan import apply_overrides, should_run, step_context
from .runs import StepResult, StepTask, retry_delay

log = logging.getLogger("hookwise.worker")

#: Largest output a step may return, as JSON text.
MAX_OUTPUT = 1024 * 1024


class StepRunner:
    """Runs steps for one worker. ``loaded`` returns the current rule set and registry;
    ``clock`` (unix seconds) stamps results and emitted events; ``hover`` is the process's
    Hover client; ``wake`` tells the worker an event was emitted."""

    def __init__(
        self, store: WorkerStore, loaded: Callable[[], Loaded], *, clock: Callable[[], float], delivery: Delivery,
        hover: SharedClient, wake: Callable[[], None],
    ) -> None:
        self.store = store
        self.loaded = loaded
        self.clock = clock
        self.delivery = delivery
        self.hover = hover
        self._wake = wake
        self._rules_by_version: dict[str, Rule] = {}
        self._destinations: dict[tuple[str, int], str | None] = {}  # by rule version and step index

    def destination(self, task: StepTask) -> str | None:
        """The host a new step will call, when its params tell it before rendering (see
        ``Action.destination``); None for a step with an ``if`` or overrides."""
        if task.overrides:
            return None
        rule = self.rule(task)
        if rule is None or task.index >= len(rule.steps) or rule.steps[task.index].condition is not None:
            return None
        key = (rule.version, task.index)
        if key not in self._destinations:
            step = rule.steps[task.index]
            registry = self.loaded().registry
            found = registry[step.action].destination(step.params) if step.action in registry else None
            if len(self._destinations) >= 4096:
                self._destinations.clear()
            self._destinations[key] = found
        return self._destinations[key]

    def timeout_of(self, task: StepTask) -> float:
        """The step's time limit in seconds (30 when its rule is gone)."""
        rule = self.rule(task)
        if rule is None or task.index >= len(rule.steps):
            return 30.0
        return rule.steps[task.index].timeout

    def execute(self, flight: InFlight, started: float) -> StepResult:
        task = flight.task
        rule = self.rule(task)
        if rule is None or task.index >= len(rule.steps):
            return self.failure(
                task, f"rule {task.rule!r} version {task.rule_version} is not available", None, started, final=True
            )
        step = rule.steps[task.index]
        loaded = self.loaded()
        params: Any = None
        try:
            if flight.prepared is not None:
                (params, model), flight.prepared = flight.prepared, None
            else:
                context = step_context(task.event, rule, task.outputs, task.attempt)
                if not should_run(step, context):
                    return self.success(task, rule, "skipped", None, None, started)
                params = apply_overrides(step.params.render(context), task.overrides)
                model = loaded.registry.validate(step.action, params)
            if rule.shadow:  # rendered and recorded as it would be sent; the action never runs
                return self.success(task, rule, "succeeded", None, params, started)
            with loaded.actions.use(step.action) as action, self._hover_for(loaded, step.action) as hover:
                try:
                    output = action.run(model, self._context(task, rule, step.timeout, hover))
                except Defer as exc:
                    if exc.host is not None:  # it may wait here for a slot of its host: keep its params
                        flight.prepared = (params, model)
                    raise
            output = _checked_output(output)
        except Defer as exc:  # nothing was sent: back to the store, the attempt not spent
            if log.isEnabledFor(logging.DEBUG):
                log.debug("run %s step %s deferred %.2fs: %s", task.run_id, task.index, exc.after, exc,
                          extra=step_fields(task, started))
            return StepResult(task=task, outcome="deferred", retry_in=exc.after, started_at=started,
                              finished_at=self.clock(), waits_for=exc.host)
        except Retry as exc:
            return self.failure(task, str(exc), exc.after, started, params=params, rule=rule)
        except (Fail, RenderError, ParamsError) as exc:
            return self.failure(task, str(exc), None, started, params=params, rule=rule, final=True)
        except Exception as exc:  # a plugin's crash is the step's failure, never the worker's
            log.debug("step failed", exc_info=True)
            return self.failure(task, f"{type(exc).__name__}: {exc}", None, started, params=params, rule=rule)
        return self.success(task, rule, "succeeded", output, params, started)

    def success(
        self, task: StepTask, rule: Rule, outcome: str, output: Any, params: Any, started: float
    ) -> StepResult:
        masker = self.loaded().masker
        # Debug: a line per step at 1,000 steps a second costs a tenth of a core and says
        # nothing the runs in the store do not; failures are logged at warning and error.
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "run %s step %s (%s) %s", task.run_id, task.index, task.action, outcome,
                extra=step_fields(task, started)
            )
        return StepResult(
            # Stored masked, outputs too: no value from the environment reaches the store, and
            # a later step sees "****" where a target echoed a secret back (SPEC 3).
            task=task, outcome=outcome, output=masker.mask_value(output), params=masker.mask_value(params),
            started_at=started, finished_at=self.clock(), next_delay=_next_delay(rule, task.index),
            step_count=len(rule.steps), ordered=_ordered(rule),
        )

    def failure(
        self, task: StepTask, error: str, after: float | None, started: float, *,
        params: Any = None, rule: Rule | None = None, final: bool = False,
    ) -> StepResult:
        masker = self.loaded().masker
        rule = rule or self.rule(task)
        step = rule.steps[task.index] if rule is not None and task.index < len(rule.steps) else None
        policy = step.retry if step is not None else self.loaded().config.settings.defaults.retry
        retry_in = None if final else retry_delay(policy, task.attempt, after)
        error = masker.mask(error)
        level = logging.WARNING if retry_in is not None else logging.ERROR
        log.log(level, "run %s step %s (%s) attempt %d failed: %s%s", task.run_id, task.index, task.action,
                task.attempt, error, f"; retrying in {retry_in:.1f}s" if retry_in is not None else "",
                extra=step_fields(task, started))
        return StepResult(
            task=task, outcome="failed", error=error, retry_in=retry_in, params=masker.mask_value(params),
            started_at=started, finished_at=self.clock(), next_delay=_next_delay(rule, task.index) if rule else 0.0,
            continue_on_error=bool(step and step.continue_on_error), step_count=len(rule.steps) if rule else 0,
            ordered=_ordered(rule),
        )

    def _context(self, task: StepTask, rule: Rule, timeout: float, hover: HoverClient | None) -> Context:
        logger = logging.LoggerAdapter(logging.getLogger("hookwise.action"), step_fields(task))
        return Context(
            event=task.event, run_id=task.run_id, step_id=task.step_id, attempt=task.attempt,
            idempotency_key=task.idempotency_key, logger=logger, rule=rule.name, timeout=timeout,
            emit=lambda type_, data, source, delay: self._emit(task, type_, data, source, delay),
            store=self.store, hover=hover,
            delivery=self.delivery, secret=self._secret, mask=self.loaded().masker.mask_value,
        )

    def _secret(self, text: str) -> bool:
        return self.loaded().masker.mask(text) != text

    def _hover_for(self, loaded: Loaded, action: str) -> AbstractContextManager[HoverClient | None]:
        """The process's Hover client for a hover step, held while it runs (one, so its
        rate limit holds for the process; made anew when a reload changes the ``hover:``
        settings); None for the other actions."""
        if action != "hover":
            return nullcontext()
        return self.hover.use(loaded.config.settings.hover)

    def _emit(self, task: StepTask, type_: str, data: Any, source: str, delay: float) -> str:
        now = self.clock()
        data = self.loaded().masker.mask_value(data)  # stored, like every event: no secret in it
        incoming = Incoming(
            source=source, type=type_, body=json.dumps(data, ensure_ascii=False, default=str), headers={}, query={},
            received_at=now, id=derived_id("emit", task.run_id, str(task.index)), depth=task.event.depth + 1,
            available_at=now + delay,
        )
        (stored,) = self.store.put_events([incoming])
        self._wake()
        return stored.event_id

    def rule(self, task: StepTask) -> Rule | None:
        loaded = self.loaded()
        rule = loaded.rules.get(task.rule)
        if rule is not None and rule.version == task.rule_version:
            return rule
        found = self._rules_by_version.get(task.rule_version)
        if found is None:
            found = self._compile_stored(loaded, task.rule_version)
        return found

    def _compile_stored(self, loaded: Loaded, version: str) -> Rule | None:
        stored = self.store.rule_text(version)
        if stored is None:
            return None
        name, file, text = stored
        try:
            rule = RuleLoader(loaded.config, loaded.registry, loaded.templates).compile_text(text, file, version)
        except ConfigError as exc:
            log.error("rule %s version %s no longer compiles: %s", name, version, exc, extra={"rule": name})
            return None
        self._rules_by_version[version] = rule
        return rule


def _ordered(rule: Rule | None) -> bool:
    return rule is not None and rule.state is not None and rule.state.order_by is not None


def _next_delay(rule: Rule | None, index: int) -> float:
    if rule is None or index + 1 >= len(rule.steps):
        return 0.0
    return rule.steps[index + 1].delay


def _checked_output(output: Any) -> Any:
    if output is None:
        return None
    try:
        text = json.dumps(output, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise Fail(f"the action returned an output that is not JSON: {exc}") from None
    if len(text) > MAX_OUTPUT:
        raise Fail(f"the action's output is {len(text)} bytes of JSON, more than the {MAX_OUTPUT} allowed")
    return json.loads(text) if not isinstance(output, dict) else dict(output)
