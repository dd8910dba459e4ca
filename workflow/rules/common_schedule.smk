# Input and param functions of schedule.smk (the schedule check, issue 18; workflow/schedule.py builds SCHEDULE in
# the Snakefile). The report rule (analysis.smk) includes the check's section through them.

from workflow.schedule import schedule_paths

SP = schedule_paths(config)


def require_schedule():
    """The check; a one-line error when the scale config has no ``schedule_check`` section."""
    if not SCHEDULE.manifest:
        raise ValueError(f"config {config['scale']}: no 'schedule_check' section, so there is no schedule check to "
                         "run (config/mini.yaml and config/smoke.yaml have one)")
    return SCHEDULE


def schedule_manifest_content(wildcards):
    return require_schedule().manifest


def schedule_inputs(wildcards):
    """What the table and section read through schedule.json: every metrics file of both schedules (the study's
    1x runs and the new ones)."""
    settings = require_schedule().manifest["settings"].values()
    metrics = sorted({f for s in settings for by_seed in s["metrics"].values() for f in by_seed.values()})
    return {"schedule": SP["manifest"], "runs": metrics}


def schedule_outputs():
    """The check's results: table and report section."""
    return [f"{SP['table']}.{ext}" for ext in ("csv", "md")] + [SP["section"]]


def schedule_section_files():
    """The schedule section once `snakemake schedule` has written it (committed, or just now); else none."""
    return [SP["section"]] if SCHEDULE.manifest and os.path.isfile(SP["section"]) else []


def schedule_section_option(wildcards):
    """``--schedule-section``, read as a plain file for the reason :func:`regime_section_option` gives."""
    files = schedule_section_files()
    return f"--schedule-section {files[0]}" if files else ""
