"""snowkit benchmarks: each module here is a standalone script with a ``--quick`` mode."""
