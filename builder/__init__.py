"""cbuild: containerized, reproducible wheel builder for HPC wheelhouses."""
