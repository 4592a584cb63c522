# Scene embeddings of every task clip, per embedder (pretrained, random init, log-mel).


rule embed:
    input:
        task="data/tasks/{task}",
        checkpoint=embedder_checkpoint,
    output:
        "results/embeddings/{embedder}/{task}.npz",
    log:
        "logs/embed/{embedder}/{task}.log",
    benchmark:
        "logs/benchmarks/embed/{embedder}/{task}.tsv"
    conda:
        "../../envs/msmbench.yaml"
    threads: RES["threads"]
    resources:
        gpu=RES["embed_gpus"],
    params:
        model=lambda wc: (
            "logmel" if wc.embedder == "logmel" else checkpoint_dir(wc.embedder)
        ),
        settings=as_json(config["embed"]),
    shell:
        "msmbench embed --model {params.model} --task-dir {input.task} --out {output} "
        "--settings {params.settings:q} --threads {threads} 2> {log}"
