"""The sidecar: a local Gremlin endpoint that balances every request.

Lives in sidecar/ but imports as gremlinlb.sidecar (see pyproject's package-dir).
"""
