"""Loading rule files (SPEC 5): find them, read each entry into a frozen Rule whose conditions,
expressions and templates are compiled once, and report every problem at its file, line and
column.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from difflib import get_close_matches
from fnmatch import translate
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError, Loc, Problem
from ..run.action import Action
from ..run.registry import Registry
from . import yamlfile
from .conditions import Condition, compile_when
from .config import Config, RetryPolicy, locate_all, merge_problems
from .lint import step_warnings
from .rules import INTERNAL_SOURCE, STEP_KEYS, OneOrMany, Rule, RuleEntries, RuleModel, Step, StepKeys, StepRetry
from .stateful import compile_state
from .templates import Compiled, Expression, Templates, is_template
from .validation import pydantic_problems, validate_rest

# --- loading ---------------------------------------------------------------------------


def rule_files(config: Config) -> tuple[list[Path], list[Problem]]:
    """The rule files named by ``rules:``: files as given, folders searched for ``*.yaml``
    and ``*.yml`` (skipping ``tests/`` folders, which hold test cases)."""
    files: list[Path] = []
    problems = []
    named = "rules" in config.settings.model_fields_set  # else the default, which need not exist
    for i, entry in enumerate(config.settings.rules):
        path = config.resolve(entry)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.suffix in (".yaml", ".yml") and "tests" not in p.relative_to(path).parts[:-1]
            )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif named:
            problems.append(Problem(f"no such file or folder: {path}", ("rules", i)))
    return files, problems


def no_rules_warning(config: Config) -> Problem:
    """The warning for a config under which no rule file holds a rule."""
    if "rules" in config.settings.model_fields_set:
        return Problem("no rules: the files and folders named here hold none", ("rules",), warning=True)
    folder = display_path(config.resolve(config.settings.rules[0])) if config.settings.rules else "rules/"
    return Problem(f"no rules: 'rules:' is not set and the default folder {folder}/ holds no rule file", warning=True)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass
class RuleLoader:
    """Loads and compiles rule files, collecting every problem before failing."""

    config: Config
    registry: Registry
    templates: Templates
    environ: Mapping[str, str] | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    #: the (user, password) pairs of the steps' ``basic: [user, password]``, as written
    #: (templates left out), for the masker
    credentials: set[tuple[str, str]] = field(default_factory=set)
    _first_seen: dict[str, str] = field(default_factory=dict)

    def load_rules(self) -> list[Rule]:
        """The rules of every rule file the config names, in file order; the problems
        of all of them are collected in :attr:`problems` (and :attr:`warnings`)."""
        files, problems = rule_files(self.config)
        self.problems.extend(self.config_problem(p) for p in problems)
        rules: list[Rule] = []
        for path in files:
            rules.extend(self.load_file(path, order=len(rules)))
        return rules

    def config_problem(self, problem: Problem) -> Problem:
        return self.config.document.locate(problem) if self.config.document else problem

    def load_file(self, path: Path, order: int = 0) -> list[Rule]:
        try:
            doc = yamlfile.load(path, environ=self.environ, display=display_path(path), collect=True)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return []
        return self.load_document(doc, order)

    def load_document(self, doc: yamlfile.Document, order: int = 0) -> list[Rule]:
        """The rules of one parsed rule file (a file, or a text such as ``POST
        /api/backtest`` takes); its problems go to :attr:`problems` and :attr:`warnings`."""
        self.secrets.update(doc.secrets)
        before = len(self.problems)
        rules: list[Rule] = []
        for i, entry in enumerate(self._entries(doc)):
            rule = self._load_rule(doc, ("rules", i), entry, order + len(rules))
            if rule is not None:
                rules.append(rule)
        # An unset ${VAR} is reported once, not again as the value it left behind.
        self.problems[before:] = merge_problems(doc.problems, self.problems[before:])
        return rules

    def _entries(self, doc: yamlfile.Document) -> list[Any]:
        """The entries of the file's ``rules:`` list (each validated on its own later)."""
        if doc.data is None:
            return []
        if not isinstance(doc.data, dict):
            self.problems.append(doc.locate(Problem("a rule file is a mapping with one key, rules: a list of rules")))
            return []
        parsed, problems = validate_rest(RuleEntries, doc.data)
        self.problems.extend(locate_all(doc, problems))
        return parsed.rules if parsed is not None else []

    def _load_rule(self, doc: yamlfile.Document, loc: Loc, entry: Any, order: int) -> Rule | None:
        # A refused name gets a stand-in, so that the rest of the rule is still checked.
        model, problems = validate_rest(RuleModel, entry, placeholders={"name": "unnamed"})
        problems = [p.under(loc) for p in problems]
        if model is None:
            self._report(doc, problems)
            return None
        given = set(entry) if isinstance(entry, dict) else set()
        kept = {RuleModel.model_fields[n].alias or n for n in model.model_fields_set}
        stand_in = {"name"} if isinstance(entry, dict) and entry.get("name") != model.name else set()
        return self._compile(doc, loc, model, order, problems, refused=(given - kept) | stand_in)

    def _report(self, doc: yamlfile.Document, problems: list[Problem]) -> None:
        located = sorted(locate_all(doc, problems), key=lambda p: (p.line or 0, p.col or 0))
        self.problems.extend(p for p in located if not p.warning)
        self.warnings.extend(p for p in located if p.warning)

    def _compile(
        self, doc: yamlfile.Document, loc: Loc, model: RuleModel, order: int, problems: list[Problem] | None = None,
        refused: set[str] | frozenset[str] = frozenset(),
    ) -> Rule | None:
        """The compiled rule, or None (its problems reported). ``problems`` are those
        found so far; ``refused`` the keys whose values were refused and left out (checks
        that depend on them are skipped: they would report the refusal's consequences)."""
        problems = list(problems or [])
        where = doc.locate(Problem("", loc), key=False)
        if "name" not in refused:
            self._check_unique(model.name, doc, loc, problems)
        # A refused unknown key may be a misspelling of any of them.
        doubt = bool(refused - {field.alias or name for name, field in RuleModel.model_fields.items()})
        selectors = model.source is None and model.event is None and model.when is None and model.if_ is None
        self._check_state_keys(model, loc, problems)
        if model.absence is not None or "absence" in refused:
            selectors = False  # an absence rule's events are its after and expect
        if selectors and not doubt and not refused & {"source", "event", "when", "if"}:
            problems.append(
                Problem('a rule needs at least one of source, event, when or if (event: "*" matches everything)', loc)
            )
        when = self._compile_when(model.when, loc + ("when",), problems)
        condition = self._compile_expression(model.if_, loc + ("if",), problems)
        steps = self._compile_steps(model, loc, problems, check_count=not doubt and not refused & {"actions", "stop"})
        events, glob = _event_selector(model.event)
        state = compile_state(self.templates, dict(model), loc, problems)
        self._warn_unknown_sources(model, loc, doc)
        self._report(doc, problems)
        if any(not p.warning for p in problems):
            return None
        source = doc.source(loc)
        version = hashlib.sha256(source.encode()).hexdigest()[:12]
        indent = " " * ((doc.values[loc].col - 1) if loc in doc.values else 0)
        return Rule(
            text=indent + source,
            name=model.name, file=doc.file, line=where.line or 1, version=version, order=order,
            steps=tuple(steps), description=model.description,
            sources=_as_set(model.source), events=events, event_glob=glob,
            event_text=tuple(_as_list(model.event)), when=when, condition=condition,
            condition_text=model.if_ or "", priority=model.priority, stop=model.stop, enabled=model.enabled,
            state=state,
            shadow=model.mode == "shadow",
        )

    def compile_text(self, text: str, file: str, version: str) -> Rule:
        """Compile one rule from its stored text (a run created by an earlier version of a
        rule keeps running with that version). Raises :class:`ConfigError`."""
        doc = yamlfile.loads(text, file=file, environ=self.environ)
        self.secrets.update(doc.secrets)
        try:
            model = RuleModel.model_validate(doc.data)
        except ValidationError as exc:
            raise ConfigError(locate_all(doc, pydantic_problems(exc, RuleModel))) from None
        rule = self._compile(doc, (), model, 0)
        if rule is None:
            raise ConfigError(self.problems)
        return replace(rule, version=version)

    @staticmethod
    def _check_state_keys(model: RuleModel, loc: Loc, problems: list[Problem]) -> None:
        """throttle and threshold exclude each other; absence stands for the event selectors."""
        if model.throttle is not None and model.threshold is not None:
            problems.append(Problem("a rule takes throttle or threshold, not both", loc + ("threshold",)))
        if model.absence is not None:
            for key in ("source", "event", "when", "if", "throttle", "threshold"):
                if getattr(model, key if key != "if" else "if_") is not None:
                    problems.append(Problem(
                        f"an absence rule takes no {key}: its events are absence.after and absence.expect",
                        loc + (key,),
                    ))

    def _check_unique(self, name: str, doc: yamlfile.Document, loc: Loc, problems: list[Problem]) -> None:
        here = doc.locate(Problem("", loc + ("name",)))
        if name in self._first_seen:
            problems.append(
                Problem(f"duplicate rule name {name!r} (first defined at {self._first_seen[name]})", loc + ("name",))
            )
        else:
            self._first_seen[name] = f"{here.file}:{here.line}:{here.col}"

    def _compile_when(self, spec: dict[str, Any] | None, loc: Loc, problems: list[Problem]) -> Condition | None:
        if spec is None:
            return None
        try:
            return compile_when(spec)
        except ConfigError as exc:
            problems.extend(p.under(loc) for p in exc.problems)
            return None

    def _compile_expression(self, source: str | None, loc: Loc, problems: list[Problem]) -> Expression | None:
        if source is None:
            return None
        try:
            return self.templates.compile_expression(source)
        except ConfigError as exc:
            problems.extend(p.under(loc) for p in exc.problems)
            return None

    def _compile_steps(
        self, model: RuleModel, loc: Loc, problems: list[Problem], check_count: bool = True
    ) -> list[Step]:
        if check_count and not model.actions and not model.stop:
            problems.append(Problem("a rule needs at least one action (or stop: true)", loc + ("actions",)))
        steps: list[Step] = []
        ids: dict[str, int] = {}
        for i, raw in enumerate(model.actions):
            step = self._compile_step(raw, i, loc + ("actions", i), ids, problems)
            if step is not None:
                steps.append(step)
        return steps

    def _compile_step(
        self, raw: Any, index: int, loc: Loc, ids: dict[str, int], problems: list[Problem]
    ) -> Step | None:
        if not isinstance(raw, dict):
            actions = ", ".join(self.registry.names())
            problems.append(Problem(f"a step is a mapping with one action key ({actions})", loc))
            return None
        action = self._action_key(raw, loc, problems)
        common = {k: v for k, v in raw.items() if k in STEP_KEYS}
        keys, refused = validate_rest(StepKeys, common)
        problems.extend(p.under(loc) for p in refused)
        if keys is None or action is None:
            return None
        step_id = self._step_id(keys.id, action, loc, ids, problems)
        params = self._compile_params(action, raw[action], loc + (action,), problems)
        condition = self._compile_expression(keys.if_, loc + ("if",), problems)
        if params is None or refused:
            return None
        return Step(
            index=index, id=step_id, action=action, params=params, condition=condition,
            retry=self._retry(keys.retry), timeout=keys.timeout or self.config.settings.defaults.timeout,
            delay=keys.delay, continue_on_error=keys.continue_on_error,
        )

    def _action_key(self, raw: dict[str, Any], loc: Loc, problems: list[Problem]) -> str | None:
        others = [k for k in raw if k not in STEP_KEYS]
        actions = [k for k in others if k in self.registry]
        for key in others:
            if key not in self.registry:
                hint = get_close_matches(key, [*self.registry.names(), *STEP_KEYS], n=1)
                known = ", ".join(self.registry.names())
                suffix = f" (did you mean {hint[0]!r}?)" if hint else f"; actions are {known}"
                problems.append(Problem(f"unknown key{suffix}", loc + (key,)))
        if len(actions) > 1:
            problems.append(Problem(f"a step takes one action; found {', '.join(map(repr, actions))}", loc))
        elif not actions and len(others) == 0:
            problems.append(Problem(f"a step needs an action: one of {', '.join(self.registry.names())}", loc))
        return actions[0] if len(actions) == 1 else None

    def _step_id(
        self, explicit: str | None, action: str, loc: Loc, ids: dict[str, int], problems: list[Problem]
    ) -> str:
        if explicit is not None:
            if explicit in ids:
                problems.append(Problem(f"duplicate step id {explicit!r}", loc + ("id",)))
            ids[explicit] = ids.get(explicit, 0) + 1
            return explicit
        # Unnamed steps are called after their action: http, then http_2, http_3, ...
        count = ids.get(action, 0) + 1
        ids[action] = count
        return action if count == 1 else f"{action}_{count}"

    def _compile_params(self, action: str, raw: Any, loc: Loc, problems: list[Problem]) -> Compiled | None:
        if not isinstance(raw, dict):
            problems.append(Problem(f"the {action} action takes a mapping of parameters", loc))
            return None
        try:
            compiled = self.templates.compile_value(raw)
        except ConfigError as exc:
            problems.extend(p.under(loc) for p in exc.problems)
            return None
        self.credentials.update(_basic_pairs(raw))
        if self.registry[action].run is Action.run:
            problems.append(Problem(
                f"the {action} action cannot run in this version of hookwise: its steps will fail", loc, warning=True
            ))
        found = self.registry.check_params(action, raw, compiled.template_paths())
        problems.extend(p.under(loc) for p in [*found, *step_warnings(action, raw, self.config.settings)])
        return None if any(not p.warning for p in found) else compiled

    def _retry(self, step: StepRetry | None) -> RetryPolicy:
        default = self.config.settings.defaults.retry
        if step is None:
            return default
        return default.model_copy(update={k: v for k, v in step.model_dump().items() if v is not None})

    def _warn_unknown_sources(self, model: RuleModel, loc: Loc, doc: yamlfile.Document) -> None:
        known = set(self.config.settings.sources) | {INTERNAL_SOURCE}
        for name in _as_list(model.source):
            if name not in known:
                hint = get_close_matches(name, sorted(known), n=1)
                suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
                unknown = Problem(f"no source named {name!r} is configured{suffix}", loc + ("source",), warning=True)
                self.warnings.append(doc.locate(unknown))


def _basic_pairs(value: Any) -> Iterator[tuple[str, str]]:
    """Every ``basic: [user, password]`` in a params value whose two parts are plain
    strings (not templates)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "basic" and isinstance(item, list) and len(item) == 2 and all(_literal(x) for x in item):
                yield item[0], item[1]
            else:
                yield from _basic_pairs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _basic_pairs(item)


def _literal(value: Any) -> bool:
    return isinstance(value, str) and not is_template(value)


def _as_list(value: OneOrMany | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _as_set(value: OneOrMany | None) -> frozenset[str] | None:
    return None if value is None else frozenset(_as_list(value))


def _event_selector(value: OneOrMany | None) -> tuple[frozenset[str] | None, re.Pattern[str] | None]:
    """Split event names into exact names and one compiled pattern for the globs;
    ``"*"`` (or no ``event``) means every type."""
    names = _as_list(value)
    if not names or "*" in names:
        return None, None
    exact = frozenset(n for n in names if not _is_glob(n))
    globs = [n for n in names if _is_glob(n)]
    pattern = re.compile("|".join(f"(?:{translate(g)})" for g in globs)) if globs else None
    return exact, pattern


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")
