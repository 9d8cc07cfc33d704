"""The Avro contract: one ``.avsc`` per subject and version, ``ids.json`` and sample records.

This folder is the package ``receiptflow.schemas`` (mapped by ``pyproject.toml``'s ``package-dir``), so
the files ship in the wheel and :mod:`receiptflow.codec` reads them with ``importlib.resources``
under that name. It holds data only: no module here imports anything.
"""
