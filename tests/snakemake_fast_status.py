"""``python -m snakemake`` with the SLURM executor plugin's job-status polling capped at :data:`CAP` seconds.

Used by the paper rehearsal (tests/test_rehearsal.py) only. snakemake-executor-plugin-slurm 2.8.0 waits its
``init_seconds_before_status_checks`` after a job finishes, then 10 s longer after each check that finds nothing
finished (2, 12, 22, ... up to 180 s). On the 2-core test cluster, whose jobs take 10 to 30 s, every job was
seen done 36 s after the previous one finished: the rehearsal took twice as long. Capping the wait changes when
Snakemake asks ``squeue``, nothing that is submitted or run. A cluster run keeps the plugin's back-off.

    python tests/snakemake_fast_status.py [snakemake arguments]
"""

from __future__ import annotations

from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor

CAP = 3.0
"""Longest wait between two status checks, seconds."""

_checks = RemoteExecutor.next_seconds_between_status_checks
RemoteExecutor.next_seconds_between_status_checks = _checks.setter(
    lambda self, seconds: setattr(self, "_next_seconds_between_status_checks", min(seconds, CAP)))

if __name__ == "__main__":
    from snakemake.cli import main

    main()
