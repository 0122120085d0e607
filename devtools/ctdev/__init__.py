"""Development and test tooling for CacheTier: local control plane and node agent (not part of the operator image)."""
