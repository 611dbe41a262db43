"""Getting checkpoint files and reading them: sources, transfers, the cache layout, digests, strict loading."""
