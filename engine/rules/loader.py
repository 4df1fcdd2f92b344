"""The one loader that ``serve``, ``check``, reload and the other commands share.

It builds, from a config file, everything matching needs: the settings, the action
registry (built-ins and plugins), the template environment, the compiled rule set and the
masker of secrets. Nothing is started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, Problem
from ..hover.handshake import BUILTIN_FILE
from ..run.action import Actions
from ..run.registry import Registry
from ..secrets import Masker
from .config import Config, read_config
from .rule_loader import RuleLoader, no_rules_warning
from .rules import Rule
from .ruleset import RuleSet
from .templates import Templates


@dataclass(frozen=True)
class Loaded:
    """Everything built from one config file."""

    config: Config
    registry: Registry
    templates: Templates
    rules: RuleSet
    masker: Masker
    #: the instances this config's steps use, made when first used; closed once retired
    actions: Actions
    warnings: tuple[Problem, ...] = ()


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Loaded:
    """Load the config at ``path`` and all it names. Raises :class:`ConfigError` with every
    problem found: config, plugin and rule problems together, as far as each could be
    checked, ordered by file and place and masked with every secret known."""
    config, problems = read_config(path, environ)
    try:
        registry = Registry.load(config.settings.plugins)
    except ConfigError as exc:
        problems.extend(_in_config(config, exc.problems))
        registry = Registry.load({}, entry_points=False)
    problems.extend(_source_problems(config))
    templates = Templates()
    loader = RuleLoader(config, registry, templates, environ)
    user_rules = loader.load_rules()
    problems.extend(loader.problems)
    masker = Masker(config.secrets | loader.secrets, loader.credentials)
    if problems:
        raise ConfigError(_ordered(problems, masker))
    rules = RuleSet([*user_rules, *_builtin(config, loader, len(user_rules))])
    warnings = [*config.warnings, *_in_config(config, registry.warnings), *loader.warnings]
    if not user_rules:
        warnings.append(loader.config_problem(no_rules_warning(config)))
    return Loaded(
        config, registry, templates, rules, masker, Actions(registry, config.settings),
        tuple(_ordered(warnings, masker))
    )


def rule_count(rules: RuleSet) -> str:
    """How many rules are loaded, said the same way by ``check``, ``/readyz`` and the
    reload log: the user's rules, and the built-in ones apart ("5 rules + 1 built-in")."""
    builtin = sum(rule.file == BUILTIN_FILE for rule in rules)
    user = len(rules) - builtin
    return f"{user} rule{'' if user == 1 else 's'}" + (f" + {builtin} built-in" if builtin else "")


def _in_config(config: Config, problems: Iterable[Problem]) -> list[Problem]:
    return [config.document.locate(p) if config.document else p for p in problems]


def _ordered(problems: Iterable[Problem], masker: Masker) -> list[Problem]:
    """``problems`` by file (in the order files were read: the config first) and place in
    it, each once, masked: a message may quote a refused value, and that may be a secret."""
    problems = list(problems)
    rank = {file: i for i, file in reversed(list(enumerate(p.file for p in problems)))}
    unique = {(p.file, p.line, p.col, p.loc, p.message): p for p in problems}.values()
    return [p.masked(masker.mask) for p in sorted(unique, key=lambda p: (rank[p.file], p.line or 0, p.col or 0))]


def _builtin(config: Config, loader: RuleLoader, after: int) -> list[Rule]:
    """The built-in rules (Hover's handshake), ordered after the user's."""
    from dataclasses import replace

    from ..hover.handshake import builtin_rules

    return [replace(rule, order=after + i) for i, rule in enumerate(builtin_rules(config, loader))]


def _source_problems(config: Config) -> list[Problem]:
    """Secrets a source cannot use (a Standard Webhooks key that does not decode)."""
    from ..receive.verify import verifier_for

    found: list[Problem] = []
    for name, source in config.settings.sources.items():
        try:
            verifier_for(source)
        except ConfigError as exc:
            found.extend(p.under(("sources", name)) for p in exc.problems)
    return _in_config(config, found)


class Current:
    """The current :class:`Loaded`, swapped whole on reload. Readers call it and keep what
    they got for the work at hand, so nothing sees half of an old set and half of a new one."""

    def __init__(self, loaded: Loaded) -> None:
        self._loaded = loaded

    def __call__(self) -> Loaded:
        return self._loaded

    def swap(self, loaded: Loaded) -> None:
        """Make ``loaded`` current and retire the one it replaces: its actions are closed
        once the steps running with them are done."""
        old, self._loaded = self._loaded, loaded
        if old is not loaded:
            old.actions.retire()

    def close(self) -> None:
        """Retire the current set (the process stops): its actions are closed once the
        steps running with them are done."""
        self._loaded.actions.retire()
