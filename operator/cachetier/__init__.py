"""CacheTier: a Kubernetes operator for Redis caches with percentage rollout."""
