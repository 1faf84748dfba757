"""EdgeStream: keeps the tunnel to CloudStream open and serves its log requests (see docs/stream.md)."""
