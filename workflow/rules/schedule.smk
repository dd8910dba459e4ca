# This study's check (issue 18, item 4), not a paper table: the headline contrasts (C3, C6, C7) at a longer schedule
# (workflow/schedule.py). `snakemake --cores all schedule`; never part of `all`. Its new runs (`-2x` in their ids)
# use the study's run_config, train and evaluate rules (run_of in common.smk); its 1x runs are the study's own.
# Functions: common_schedule.smk.


rule schedule_manifest:
    """schedule.json: settings, contrasts and the metrics files of each at both schedules (what
    analysis/schedule.py reads)."""
    output:
        SP["manifest"],
    params:
        content=schedule_manifest_content,
    log:
        f"{W}/logs/schedule_manifest.log",
    localrule: True
    run:
        write_local(output[0], log[0], params.content)


rule schedule_table:
    """table_schedule: per headline contrast and schedule, AP of both sides over seeds, Δ, threshold, outcome and
    verdict, and whether the longer schedule changes the verdict."""
    input:
        unpack(schedule_inputs),
    output:
        csv=f"{SP['table']}.csv",
        md=f"{SP['table']}.md",
    log:
        f"{W}/logs/analysis/table_schedule.log",
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.schedule table --schedule {input.schedule} --out {output.csv} {output.md} > {log} 2>&1"


rule schedule_section:
    """schedule.md: the report section on the verdicts' stability against the schedule; REPORT.md includes it."""
    input:
        unpack(schedule_inputs),
        table=f"{SP['table']}.md",
    output:
        SP["section"],
    log:
        f"{W}/logs/analysis/schedule_section.log",
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.schedule section --schedule {input.schedule} --table {input.table} --out {output} "
        "> {log} 2>&1"


rule schedule:
    """Target: this study's check (issue 18), not a paper table: table_schedule and the report section schedule.md
    under results/<scale>/."""
    input:
        schedule_outputs(),
