# This study's addition (issue 18), not a paper table: FL against alpha-CE across the positive rate per
# classification output (workflow/regime.py). `snakemake --cores all regime`; never part of `all`. Its runs use the
# study's run_config, train and evaluate rules (their ids start with `regime-`). Functions: common_imbalance.smk.


rule regime_dataset:
    """One rate's dataset variant: make-dataset with the options of ``regime.datasets[].args``."""
    output:
        directory(RP["data"]),
    log:
        f"{W}/logs/regime_dataset/{{tag}}.log",
    benchmark:
        f"{W}/benchmarks/regime_dataset/{{tag}}.tsv"
    params:
        seed=config["dataset"].get("seed", 0),
        args=regime_dataset_options,
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m retinanet make-dataset --out {output} --seed {params.seed} {params.args} > {log} 2>&1"


rule evaluate_snapshot:
    """COCO evaluation of the weights a run kept after one iteration (solver.snapshot_period): one point of an
    AP-against-iteration curve."""
    input:
        P["result"],
    output:
        RP["snapshot_metrics"],
    log:
        f"{W}/logs/evaluate_snapshot/{{rid}}-{{iteration}}.log",
    benchmark:
        f"{W}/benchmarks/evaluate_snapshot/{{rid}}-{{iteration}}.tsv"
    params:
        run_dir=run_dir,
        out_dir=output_dir,
        gpus=job_gpus,
        cpus=slurm_cpus,
    threads: config["job_threads"]
    conda:
        "../../environment.yml"
    shell:
        "python -m workflow.scripts.launch --gpus {params.gpus} --threads {threads} --slurm-cpus {params.cpus} -- "
        "evaluate --run {params.run_dir} --out {params.out_dir} --iteration {wildcards.iteration} > {log} 2>&1"


rule regime_manifest:
    """regime.json: rates, arms, seeds and the files of each (what analysis/regime.py reads)."""
    output:
        RP["manifest"],
    params:
        content=regime_manifest_content,
    log:
        f"{W}/logs/regime_manifest.log",
    localrule: True
    run:
        write_local(output[0], log[0], params.content)


rule regime_table:
    """table_imbalance: per rate, the measured rate beside COCO's, each arm's AP over seeds, FL - best CE."""
    input:
        unpack(regime_inputs),
    output:
        csv=f"{RP['table']}.csv",
        md=f"{RP['table']}.md",
    log:
        f"{W}/logs/analysis/table_imbalance.log",
    params:
        coco=coco_stats_option,
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.regime table --regime {input.regime} --out {output.csv} {output.md} {params.coco} "
        "> {log} 2>&1"


rule regime_figure:
    """fig_imbalance: each arm's AP and AP(FL) - AP(best CE) against the rate (log x), COCO's rate marked."""
    input:
        unpack(regime_inputs),
    output:
        png=f"{RP['figure']}.png",
        pdf=f"{RP['figure']}.pdf",
    log:
        f"{W}/logs/analysis/fig_imbalance.log",
    params:
        coco=coco_stats_option,
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.regime figure --regime {input.regime} --out {output.png} {output.pdf} {params.coco} "
        "> {log} 2>&1"


rule regime_curves:
    """fig_imbalance_curves: AP against the iteration of each arm at the mildest and the most extreme rate."""
    input:
        unpack(regime_inputs),
    output:
        png=f"{RP['curves']}.png",
        pdf=f"{RP['curves']}.pdf",
    log:
        f"{W}/logs/analysis/fig_imbalance_curves.log",
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.regime curves --regime {input.regime} --out {output.png} {output.pdf} > {log} 2>&1"


rule regime_section:
    """regime.md: the report section "This study's addition (not in the paper)"; REPORT.md includes it."""
    input:
        unpack(regime_inputs),
        table=f"{RP['table']}.md",
        figure=f"{RP['figure']}.png",
        curves=f"{RP['curves']}.png",
    output:
        RP["section"],
    log:
        f"{W}/logs/analysis/regime_section.log",
    params:
        coco=coco_stats_option,
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m analysis.regime section --regime {input.regime} --table {input.table} --figure {input.figure} "
        "--curves {input.curves} --out {output} {params.coco} > {log} 2>&1"


rule regime:
    """Target: this study's addition (issue 18), not a paper table: table_imbalance, fig_imbalance,
    fig_imbalance_curves and the report section regime.md under results/<scale>/."""
    input:
        regime_outputs(),
