"""The first sync of two existing datasets: ``sfsync backfill <Object>`` (``producers.firstsync.run.backfill``).

Pure matching (which unlinked records are the same record, by the object's ``match_key``) lives in
:mod:`producers.firstsync.matching`; reading both sides, linking and sending the rest through the pipeline
in :mod:`producers.firstsync.run`.
"""
