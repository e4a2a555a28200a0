"""The wheelhouse: `layout` (folders, search order, accepted tags, scan, writable check) owns
its shape; `placement` decides where wheels go and copies them in. The lock that serializes
placements into one wheelhouse belongs here too (issue 10)."""
