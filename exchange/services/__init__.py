"""Services: what the endpoints, the admin, the commands and the tasks ask of jwtex.

Each module is one concern (the exchange pipeline, its audit, its limits, tenants, rule order,
the simulator, the overview); none knows a wire format (import-linter checks it).
"""
