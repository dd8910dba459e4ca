# The imbalance the paper is about, measured: the positive rate per classification output of a run's training data
# under its anchors and matcher (python -m retinanet anchor-stats), which the report states beside COCO's. Functions:
# common_imbalance.smk.


rule anchor_stats:
    """Foreground anchors, anchors and the positive rate per classification output of a run's training split (only
    its annotation file is read): the imbalance the report states beside COCO's."""
    input:
        unpack(anchor_stats_inputs),
    output:
        anchor_stats_path("{rid}"),
    log:
        f"{W}/logs/anchor_stats/{{rid}}.log",
    params:
        annotations=run_train_annotations,
        options=anchor_stats_args,
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "python -m retinanet anchor-stats --config {input.config} --annotations {params.annotations} --train "
        "{params.options} --out {output} > {log} 2>&1"


if config["dataset"]["source"] != "coco":

    rule anchor_stats_coco:
        """COCO's positive rate per classification output, measured with the paper's settings (RunConfig's
        defaults) on COCO's training annotations, where they are present (COCO_TRAIN_ANNOTATIONS)."""
        input:
            ancient(COCO_TRAIN_ANNOTATIONS),
        output:
            f"{W}/anchor-stats/coco/train2017.json",
        log:
            f"{W}/logs/anchor_stats/coco-train2017.log",
        params:
            options=anchor_stats_args,
        threads: 1
        conda:
            "../../environment.yml"
        shell:
            "python -m retinanet anchor-stats --annotations {input} --train {params.options} --out {output} "
            "> {log} 2>&1"
