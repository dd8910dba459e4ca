# The manifest (study.json) and the analysis targets: every table and figure of the paper, and the report.
# Analysis scripts get all their inputs through the manifest (they never glob); the rules make sure those files exist.


rule manifest:
    """study.json: which runs (and which of their output files) make up each table and figure."""
    output:
        P["manifest"],
    params:
        content=manifest_content,
    log:
        f"{W}/logs/manifest.log",
    localrule: True
    run:
        write_local(output[0], log[0], params.content)


rule table:
    """One regenerated table (paper values beside ours): CSV (long) and Markdown."""
    input:
        unpack(table_inputs),
    output:
        csv=report(f"{R}/tables/table_{{table}}.csv", category="Tables", labels={"table": "{table}"}),
        md=f"{R}/tables/table_{{table}}.md",
    log:
        f"{W}/logs/analysis/table_{{table}}.log",
    params:
        out_dir=output_dir,
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.tables --study {input.study} --out-dir {params.out_dir} "
        "--tables {wildcards.table} > {log} 2>&1"


rule figure:
    """One figure as PNG and PDF; analytic figures (1, 5, 6) need no run, the others read the manifest."""
    input:
        unpack(figure_inputs),
    output:
        png=report(f"{R}/figures/{{fig}}.png", category="Figures", labels={"figure": "{fig}"}),
        pdf=f"{R}/figures/{{fig}}.pdf",
    log:
        f"{W}/logs/analysis/{{fig}}.log",
    params:
        source=figure_source,
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.{wildcards.fig} {params.source} --out {output.png} {output.pdf} > {log} 2>&1"


rule report:
    """REPORT.md: every table and figure, the claims with verdicts, and the scale's deviations from the paper."""
    input:
        unpack(report_inputs),
    output:
        P["report"],
    log:
        f"{W}/logs/analysis/report.log",
    params:
        coco=coco_stats_option,
        regime=regime_section_option,
        schedule=schedule_section_option,
        sections=report_sections,
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.report --study {input.study} --out {output} --wall {input.wall} "
        "--anchor-stats {input.anchor_stats} {params.coco} {params.regime} {params.schedule} > {log} 2>&1"


rule export:
    """results/<scale>/study: what the notebooks and the report read of the study, small enough to commit: the
    manifest (paths relative to it), each run's metrics, timing, config, result, provenance and training log, and
    Figure 4's CDF summary; no checkpoints, detections or loss samples (analysis/export.py; written to a temporary
    folder and renamed, so a stopped job leaves no partial export)."""
    input:
        unpack(export_inputs),
    output:
        directory(EXPORT),
    log:
        f"{W}/logs/analysis/export.log",
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.export --study {input.study} --out {output} > {log} 2>&1"


rule notebooks:
    """The analysis notebooks executed against the export, showing the DAG's figures (analysis/notebooks.py): at the
    default scale the committed notebooks are rewritten in place, so their outputs never drift from the committed
    results; at the others they go to results/<scale>/notebooks. The record lists what ran."""
    input:
        study=EXPORT,
        figures=figure_outputs(),
        notebooks=NOTEBOOKS,
    output:
        f"{W}/notebooks.json",
    log:
        f"{W}/logs/analysis/notebooks.log",
    params:
        manifest=exported_manifest,
        out_dir=notebooks_dir,
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.notebooks --study {params.manifest} --out-dir {params.out_dir} --record {output} "
        "{input.notebooks} > {log} 2>&1"
