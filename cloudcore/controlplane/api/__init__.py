"""The control plane's REST API: resources, object semantics, HTTP handlers."""
