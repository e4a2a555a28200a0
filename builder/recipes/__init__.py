"""Recipes: the TOML format, strict loading with overrides, and the legacy-config importer."""
