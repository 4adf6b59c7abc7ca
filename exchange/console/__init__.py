"""The console's content: what the admin shows an operator, not what decides a token.

The copy-paste set-up snippets (AWS, CI, jwtex's client) and how they quote values, the
traffic chart, and the catalogue of issuer presets with their platforms' claims. Pure like
``exchange.core`` (no Django, no I/O), on a floor of its own above it: the core never imports
it (docs/design/layout.md#import-contracts).
"""
