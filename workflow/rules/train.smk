# One trained model per run id (run name + seed); evaluation, timing and loss samples read its run folder.
# Each torch job starts through workflow/scripts/launch.py: its torch threads are the job's CPUs (Snakemake threads
# locally, the allocation's cpus_per_task inside a SLURM job), and inside SLURM it checks that it sees its GPUs.


rule run_config:
    """The run's config file: the study's resolved RunConfig for this run without its runtime fields (data root,
    workers, checkpoint period...: the train rule passes them). A changed scientific config reruns it (params), and
    the newer file reruns the train job; an operational change does neither."""
    output:
        P["run_config"],
    params:
        content=run_config_content,
    log:
        f"{W}/logs/run_config/{{rid}}.log",
    localrule: True
    run:
        write_local(output[0], log[0], params.content)


rule train:
    """python -m retinanet train; under torchrun with one process per GPU when the job has several GPUs. A
    requeued or retried job resumes from the run's last checkpoint (--resume auto), a rerun job reuses the finished
    run of the same identity (docs/study.md, "Rerunning safely"). Before the SLURM time limit, and on SIGTERM, the
    job saves a checkpoint and exits 75 to be retried (retinanet/engine/preemption.py; the workflow profiles retry train
    3 times). result.json is written last."""
    input:
        unpack(train_inputs),
    output:
        P["result"],
    log:
        f"{W}/logs/train/{{rid}}.log",
    benchmark:
        f"{W}/benchmarks/train/{{rid}}.tsv"
    params:
        run_dir=run_dir,
        operational=operational_options,
        history=train_history,
        gpus=job_gpus,
        cpus=slurm_cpus,
    threads: config["job_threads"]
    conda:
        "../../environment.yml"
    # Snakemake deletes {log} before each job, so every job's output also goes to the run's history log, appended
    # (one section per job: a stopped, retried or requeued run has several). tee ignores the SIGTERM that SLURM
    # sends every process, so the training process can still log while it saves its checkpoint.
    shell:
        "{{ echo \"== train job $(date '+%F %T %Z') on $(hostname), SLURM job ${{SLURM_JOB_ID:-none}}\"; "
        "python -m workflow.scripts.launch --gpus {params.gpus} --threads {threads} --slurm-cpus {params.cpus} -- "
        "train --config {input.config} {params.operational} --out {params.run_dir} --resume auto; }} 2>&1 "
        "| (trap '' TERM USR1; exec tee -a {params.history}) > {log}"


rule evaluate:
    """COCO evaluation on the validation split: metrics.json (AP in percent; a diverged run gives AP 0)."""
    input:
        P["result"],
    output:
        P["metrics"],
    log:
        f"{W}/logs/evaluate/{{rid}}.log",
    benchmark:
        f"{W}/benchmarks/evaluate/{{rid}}.tsv"
    params:
        run_dir=run_dir,
        out_dir=eval_dir,
        gpus=job_gpus,
        cpus=slurm_cpus,
    threads: config["job_threads"]
    conda:
        "../../environment.yml"
    shell:
        "python -m workflow.scripts.launch --gpus {params.gpus} --threads {threads} --slurm-cpus {params.cpus} -- "
        "evaluate --run {params.run_dir} --out {params.out_dir} > {log} 2>&1"


rule time:
    """Table 1e: inference time per image (batch 1) of a trained run."""
    input:
        P["result"],
    output:
        P["timing"],
    log:
        f"{W}/logs/time/{{rid}}.log",
    benchmark:
        f"{W}/benchmarks/time/{{rid}}.tsv"
    params:
        run_dir=run_dir,
        options=timing_args,
        gpus=job_gpus,
        cpus=slurm_cpus,
    threads: config.get("timing_threads", config["job_threads"])   # mini: all cores, so nothing runs beside it
    conda:
        "../../environment.yml"
    shell:
        "python -m workflow.scripts.launch --gpus {params.gpus} --threads {threads} --slurm-cpus {params.cpus} -- "
        "time --run {params.run_dir} --out {output} {params.options} > {log} 2>&1"


rule loss_samples:
    """Figure 4: classifier outputs of positive and negative anchors of a converged model."""
    input:
        P["result"],
    output:
        P["loss_samples"],
    log:
        f"{W}/logs/loss_samples/{{rid}}.log",
    benchmark:
        f"{W}/benchmarks/loss_samples/{{rid}}.tsv"
    params:
        run_dir=run_dir,
        options=loss_samples_args,
        gpus=job_gpus,
        cpus=slurm_cpus,
    threads: config["job_threads"]
    conda:
        "../../environment.yml"
    shell:
        "python -m workflow.scripts.launch --gpus {params.gpus} --threads {threads} --slurm-cpus {params.cpus} -- "
        "loss-samples --run {params.run_dir} --out {output} {params.options} > {log} 2>&1"
