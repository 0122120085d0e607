"""The one exception that means "the user's spec is wrong" (pure).

The reconcile turns :class:`SpecError` — and only it — into ``Ready=False``,
reason ``InvalidSpec``; any other exception is the operator's own error (logged
with its traceback, an Event ``ReconcileError``, retried with back-off).
"""

from __future__ import annotations


class SpecError(ValueError):
    """A value of the spec (or of a Secret it names) the operator cannot use."""
