"""Development and test tooling for CacheTier (not part of the operator image).

The local control plane (``controlplane``) and the node agent (``nodeagent``).
"""
