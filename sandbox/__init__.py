"""Local Kubernetes control plane used by tests and demos."""
