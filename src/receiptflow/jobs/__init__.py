"""Batch jobs that combine the layers below them.

``producers``, ``processors`` and ``sinks`` never import each other; a job that needs two of them
(the profile rebuild reads the warehouse and writes Redis profiles; segments do the same; the
subject export and erasure reach every store) lives here, above all three. Only the CLI imports it.
"""
