"""Spec-derived conformance cases.  Each module is one area; each case names its clauses.

Cases use only the driver (``blk``/``device``/``platform`` fixtures) and never a
target or the reference device, so they run unchanged on every target.
"""
