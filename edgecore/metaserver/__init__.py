"""MetaServer: a Kubernetes-compatible read API over the edge's SQLite store (127.0.0.1:10550, plain HTTP)."""
