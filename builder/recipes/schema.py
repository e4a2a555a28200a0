"""The JSON schema of a recipe file (draft 2020-12), generated from the key table: what
`cbuild recipe schema` writes it (builder/data/recipe.schema.json) for editors."""

from __future__ import annotations

import json
from typing import Any

from builder.recipes.fields import SECTIONS

SCHEMA_ID = "https://cbuild.invalid/schema/recipe.schema.json"


def schema() -> dict[str, Any]:
    """The JSON schema of a recipe file (draft 2020-12), made from SECTIONS."""

    def sections(base: bool) -> dict[str, Any]:
        out = {}
        for section, keys in SECTIONS.items():
            props = {k: v.schema for k, v in keys.items() if base or v.overridable}
            out[section] = {"type": "object", "additionalProperties": False, "properties": props}
        if base:
            out["package"]["required"] = ["name"]
        return out

    def overrides() -> dict[str, Any]:
        ref = {"$ref": "#/$defs/override"}
        return {
            "versions": {
                "type": "object",
                "description": "Overrides for the versions a PEP 440 specifier matches.",
                "additionalProperties": ref,
            },
            "accelerators": {
                "type": "object",
                "description": "Overrides for accelerators matching a glob (cpu, cuda12, "
                "cuda*); '!' in front negates.",
                "additionalProperties": ref,
            },
            "targets": {
                "type": "object",
                "description": "Overrides for target ids matching a glob (gentoo2023-*); '!' in "
                "front negates.",
                "additionalProperties": ref,
            },
        }

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "cbuild recipe",
        "description": "recipes/<name>.toml: what a package needs beyond its sdist.",
        "type": "object",
        "additionalProperties": False,
        "required": ["package"],
        "properties": {
            **sections(True),
            **overrides(),
        },
        "$defs": {
            "override": {
                "type": "object",
                "additionalProperties": False,
                "properties": {**sections(False), **overrides()},
            }
        },
    }


def schema_text() -> str:
    """schema() as committed in builder/data/recipe.schema.json."""
    return json.dumps(schema(), indent=2) + "\n"
