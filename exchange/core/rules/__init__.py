"""Tenant rules in CEL: cost guards (cel_guard), the rule's shape and its checks (spec), and
the evaluation that decides an exchange (engine)."""
