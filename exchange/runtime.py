"""Per-process cache of everything one exchange reads (placeholder; filled in below)."""

_RUNTIMES: dict = {}


def runtime_forget(*, tenant_id: int) -> None:
    _RUNTIMES.pop(tenant_id, None)
