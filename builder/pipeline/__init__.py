"""The main job: fetch -> build (offline) -> repair -> test (offline, on the level) -> place."""
