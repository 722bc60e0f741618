"""Read what ``ssmrec export`` writes: ``ssmrec.export.load(path) -> Export``.

The reader lives in :mod:`ssmrec.serving.export` (which also writes exports); this module is its
stable public name. The file layout is documented in the README ("Export file layout").
"""

from __future__ import annotations

from ssmrec.serving.export import Export, IdMap, UnknownIdError, load

__all__ = ["Export", "IdMap", "UnknownIdError", "load"]
