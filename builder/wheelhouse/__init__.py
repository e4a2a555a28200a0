"""The wheelhouse: `layout` (folders, search order, accepted tags, scan, writable check) owns
its shape; `placement` decides where wheels go (from the builds and their ISA figures) and
copies them in; `lock` serializes placements into one wheelhouse; `unplaced` is the format of
a split job's export, which `cbuild place` places as one run."""
