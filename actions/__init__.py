"""The built-in actions, one module each; :class:`engine.run.registry.Registry` loads them
(nothing here imports it back)."""

from __future__ import annotations

from engine.run.action import Action

from . import email, emit, exec, hover, http, log, requeue

#: Every built-in action class, in the order of SPEC section 6.
BUILTINS: tuple[type[Action], ...] = (
    http.HttpAction,
    email.EmailAction,
    requeue.RequeueAction,
    emit.EmitAction,
    log.LogAction,
    exec.ExecAction,
    hover.HoverAction,
)

__all__ = ["BUILTINS"]
