"""The embedded Kubernetes-compatible control plane: SQLite store, REST API, controllers."""
