"""Image specs, the in-container layout, the renderers (Containerfile, Apptainer), step scripts."""
