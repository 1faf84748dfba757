"""MetaServer: a Kubernetes-compatible API over the edge's SQLite store (127.0.0.1:10550, plain HTTP); kinds the
node does not sync come through the cloud's dynamiccontroller and are cached there too."""
