"""Adapters that talk to Redis; the only package that imports redis-py."""
