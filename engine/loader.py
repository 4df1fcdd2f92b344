"""The one loader that ``serve``, ``check``, reload and the other commands share.

It builds, from a config file, everything matching needs: the settings, the action
registry (built-ins and plugins), the template environment, the compiled rule set and the
masker of secrets. Nothing is started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .action import Actions, Registry
from .config import Config, load_config
from .errors import ConfigError, Problem
from .rules import Rule, RuleLoader, RuleSet
from .secrets import Masker
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
    problem found: plugin and rule problems are reported together."""
    config = load_config(path, environ)
    problems: list[Problem] = []
    try:
        registry = Registry.load(config.settings.plugins)
    except ConfigError as exc:
        assert config.document is not None
        problems.extend(config.document.locate(p) for p in exc.problems)
        registry = Registry.load({}, entry_points=False)
    problems.extend(_source_problems(config))
    templates = Templates()
    loader = RuleLoader(config, registry, templates, environ)
    try:
        rules = loader.load()
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems) from None
    if problems:
        raise ConfigError(problems)
    rules = RuleSet([*rules, *_builtin(config, loader, len(rules))])
    masker = Masker(config.secrets | loader.secrets, loader.credentials)
    plugin_warnings = tuple(config.document.locate(w) if config.document else w for w in registry.warnings)
    warnings = config.warnings + plugin_warnings + tuple(loader.warnings)
    return Loaded(config, registry, templates, rules, masker, Actions(registry, config.settings), warnings)



def _builtin(config: Config, loader: RuleLoader, after: int) -> list[Rule]:
    """The built-in rules (Hover's handshake), ordered after the user's."""
    from dataclasses import replace

    from .handshake import builtin_rules

    return [replace(rule, order=after + i) for i, rule in enumerate(builtin_rules(config, loader))]


def _source_problems(config: Config) -> list[Problem]:
    """Secrets a source cannot use (a Standard Webhooks key that does not decode)."""
    from .verify import verifier_for

    found: list[Problem] = []
    for name, source in config.settings.sources.items():
        try:
            verifier_for(source)
        except ConfigError as exc:
            found.extend(p.under(("sources", name)) for p in exc.problems)
    return [config.document.locate(p) if config.document else p for p in found]


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
