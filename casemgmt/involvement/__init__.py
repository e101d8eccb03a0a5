"""Record scope: which organisations are involved with a person or a chain, as a fact.

See :mod:`casemgmt.involvement.scope`. DOMAIN.md section 7 says who is involved; this package
turns that into SQL so that every route checks it before anything else.
"""
