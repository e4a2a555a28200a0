"""Jobs built on the pipeline: recursive builds, reproduce/verify, batch and Slurm, bench."""
