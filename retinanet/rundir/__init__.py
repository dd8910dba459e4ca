"""A run folder (``RUNDIR``) and the files that describe it beside its weights: their names and what a job does with a
folder before it trains (``folder``), the run's identity and record (``identity``, ``record``: ``run.json``), the
one-job lock (``lock``: ``job.lock``), every job on it (``attempts``: ``attempts.json``), what it ran on
(``provenance``: ``provenance.json``) and its weight snapshots (``snapshots``)."""
