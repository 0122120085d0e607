"""kopf handlers; importing this package registers them."""

from cachetier.handlers import tier as tier

__all__ = ["tier"]
