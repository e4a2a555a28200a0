"""The wheelhouse: its layout (folders, search order, tags, scan) and placement into it."""
