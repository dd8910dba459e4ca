# Data and pretrained weights: prepared once, before (and never inside) the training jobs.

# Only the rules of the scale's data and weights sources are defined, so the DAG holds nothing else.
if config["dataset"]["source"] == "synthetic":

    rule make_dataset:
        """mini/smoke: generate the embedded synthetic dataset (COCO format), deterministic from its seed."""
        output:
            directory(config["dataset"]["root"]),
        log:
            f"{W}/logs/make_dataset.log",
        benchmark:
            f"{W}/benchmarks/make_dataset.tsv"
        params:
            seed=config["dataset"].get("seed", 0),
            args=dataset_args,
        threads: 1
        conda:
            "../../environment.yml"
        shell:
            "python -m retinanet make-dataset --out {output} --seed {params.seed} {params.args} > {log} 2>&1"

else:

    rule check_coco:
        """paper: check the COCO 2017 layout under dataset.root; on failure the log says what is missing and how to
        get it. Nothing is downloaded."""
        output:
            f"{W}/data/coco-layout.json",
        log:
            f"{W}/logs/check_coco.log",
        params:
            paths=coco_paths,
        localrule: True
        conda:
            "../../environment.yml"
        shell:
            "python -m retinanet check-coco {params.paths} --out {output} > {log} 2>&1 || {{ cat {log} >&2; exit 2; }}"


if config["weights"]["source"] in ("msra", "torchvision"):

    rule fetch_weights:
        """ImageNet-1k ResNet weights, downloaded once into the cache: Detectron's MSRA R-<depth>.pkl (source msra, the
        paper's), checked blob by blob and converted for model.backbone_style caffe2, or torchvision's, verified against
        the SHA-256 prefix in their published file name. A local rule: it needs the network, GPU jobs never do."""
        output:
            weights_path(config, "{depth}"),
        log:
            f"{config['weights']['cache']}/logs/resnet{{depth}}.log",
        params:
            source=config["weights"]["source"],
            url=weights_url,
        localrule: True
        retries: 2
        conda:
            "../../environment.yml"
        shell:
            "python -m workflow.scripts.fetch_weights --source {params.source} --depth {wildcards.depth} {params.url} "
            "--out {output} > {log} 2>&1"

elif config["weights"]["source"] == "pretrain":

    rule pretrain_backbone:
        """mini/smoke: the stand-in for ImageNet pretraining. Each small ResNet is trained once on a classification
        task cut from the embedded training split (object crops vs background, retinanet/tools/pretrain.py); every run of
        that depth starts from it with frozen BatchNorm, as the paper's runs start from ImageNet weights."""
        input:
            dataset_ready(),
        output:
            f"{config['weights']['cache']}/{{weights}}.pth",
        log:
            f"{W}/logs/pretrain_{{weights}}.log",
        benchmark:
            f"{W}/benchmarks/pretrain_{{weights}}.tsv"
        wildcard_constraints:
            weights=PRETRAINED_WEIGHTS,
        params:
            args=pretrain_args,
        threads: config["job_threads"]
        priority: 10  # each pretraining gates every run of its replica; without priority Snakemake prefers the
                      # ready runs (larger inputs), and mini's second ResNet-18 replica would start last, one core idle
        conda:
            "../../environment.yml"
        shell:
            "python -m retinanet pretrain --data {input} --out {output} --threads {threads} {params.args} > {log} 2>&1"
