"""What a request leaves behind, as data: run records, jobs, and the journal that stores them.

``run`` (``Attempt``, ``Execution``, ``Result``), ``jobs`` (typed, frozen
job rows and options) and ``journal`` (SQLite, WAL: every request, attempt,
cost and audit event). These sit below routing, the runtime and IoT, which
all read and write them, so that none of those folders imports another's
internals. A new field of a run or a journal table goes here.
"""
