"""CloudStream: `kubectl logs` for edge pods through a tunnel that each edge node keeps open (see docs/stream.md)."""
