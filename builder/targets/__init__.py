"""Targets: stacks (data files), CPU levels (archspec) and how a level can be tested here."""
