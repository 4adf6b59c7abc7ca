"""The pure floor of jwtex: no Django, no I/O, values in and values out.

Verification, rules, minting, rotation and the AWS rules live here, so the exchange's logic
can be read, tested and fuzzed without a database or a network (import-linter checks that
nothing here imports Django or any other part of the project).
"""
