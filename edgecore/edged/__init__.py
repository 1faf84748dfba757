"""Edged: the edge's lightweight kubelet (node registration and status now; pods come with issue 7)."""
