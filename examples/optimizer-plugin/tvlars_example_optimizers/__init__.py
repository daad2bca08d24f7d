"""An example tvlars optimizer plugin: Lion, declared in :mod:`.lion` (entry point ``lion``)."""
