"""redis-py client options shared by the operator's Redis connections.

redis-py 8 greets a server with ``CLIENT SETINFO`` and ``CLIENT
MAINT_NOTIFICATIONS``; Redis < 7.2 answers both with error replies, which
would inflate the very error rate the health probe measures (and every
connection of the cluster executor). The operator turns both off.
"""

from __future__ import annotations

from typing import Any

from redis.maint_notifications import MaintNotificationsConfig


def quiet_handshake() -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis`` that send no optional greeting commands."""
    return {
        "driver_info": None,
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
