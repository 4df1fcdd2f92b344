"""JSON Schemas of the files hookwise reads, for editor completion (``hookwise schema``)."""

from __future__ import annotations

from typing import Any

from ..run.registry import Registry
from .casefiles import CaseFile
from .config import Settings
from .rules import RuleFile, StepKeys

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    schema = Settings.model_json_schema(by_alias=True)
    return {**schema, "$schema": DIALECT, "title": "hookwise config"}


def rules_schema(registry: Registry) -> dict[str, Any]:
    """The rule file schema, with each step an object of the common keys and exactly one
    action key whose value is that action's params."""
    schema = RuleFile.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    actions = registry.json_schema()
    for name, params in actions.items():
        defs.update(params.pop("$defs", {}))
        defs[f"action_{name}"] = params
    common = StepKeys.model_json_schema(by_alias=True)
    defs.update(common.pop("$defs", {}))
    defs["Step"] = {
        "type": "object",
        "properties": {**common["properties"], **{n: {"$ref": f"#/$defs/action_{n}"} for n in actions}},
        "additionalProperties": False,
        "oneOf": [{"required": [n]} for n in actions],
    }
    defs["RuleModel"]["properties"]["actions"] = {"type": "array", "items": {"$ref": "#/$defs/Step"}}
    return {**schema, "$schema": DIALECT, "title": "hookwise rules"}


def cases_schema() -> dict[str, Any]:
    return {**CaseFile.model_json_schema(by_alias=True), "$schema": DIALECT, "title": "hookwise rule test cases"}


#: The files ``hookwise schema KIND`` describes.
SCHEMA_KINDS = ("config", "rules", "cases")


def schemas(registry: Registry) -> dict[str, dict[str, Any]]:
    return {"config": config_schema(), "rules": rules_schema(registry), "cases": cases_schema()}
