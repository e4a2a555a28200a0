# cbuild's everyday tasks. `bash ci/setup.sh` first on a fresh machine (installs `just` into .venv).
venv := ".venv/bin"

# Run the whole test suite (unit and integration; integration needs the engine from ci/setup.sh)
test *ARGS:
    {{venv}}/python -m pytest -ra {{ARGS}}

# Only the fast unit tests
unit *ARGS:
    {{venv}}/python -m pytest -ra -m "not integration and not network" {{ARGS}}

# The main job: biopython 1.85 for every target into ./wheelhouse, explained
demo:
    {{venv}}/cbuild wheel biopython 1.85 --all-targets --wheelhouse wheelhouse --explain

# Benchmarks, written to bench/results.json
bench:
    {{venv}}/python -m builder.workflows.bench --out bench/results.json

# ruff lint and format check
lint:
    {{venv}}/ruff check builder tests
    {{venv}}/ruff format --check builder tests

# Rewrite the shipped recipe schema (package data) from the recipe model
schema:
    {{venv}}/cbuild recipe schema --out builder/data/recipe.schema.json

# Rewrite images/ from the renderer
render:
    {{venv}}/cbuild images render
