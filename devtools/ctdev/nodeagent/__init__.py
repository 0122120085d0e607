"""A local node agent for development and tests: Pods bound to its Node become real processes.

The agent registers a Node, keeps its Lease and Ready heartbeat, gives each Pod a loopback
address, materialises its volumes, runs Redis/Valkey containers as local ``redis-server``
processes and the demo app as a local Python process, reports truthful Pod status (probes,
restarts, exit codes), provisions a local StorageClass and lets its processes reach Services
by name. Run it with ``python -m ctdev.nodeagent --kubeconfig K --state-dir D``.

This package is development tooling, not part of the operator image. Importing it is cheap:
the ``shim`` module (run inside pods' shell scripts) imports only the pure modules.
"""

NODE_NAME = "cachetier-local"
"""The default name of the Node the agent registers."""
