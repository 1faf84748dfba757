"""Controllers of the embedded control plane: each reconciles one kind through the ObjectAPI."""
