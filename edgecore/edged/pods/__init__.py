"""Pod lifecycle for Edged: spec parsing, a sans-I/O planner, CRI configs, status, and per-pod workers."""
