"""The control plane's storage: a durable SQLite log, the committed state in memory, watch fan-out."""
