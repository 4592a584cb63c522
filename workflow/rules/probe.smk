# Probes: the protocol of config["probe"] over several seeds, per (embedder, task).


rule probe:
    input:
        embeddings=rules.embed.output[0],
        task="data/tasks/{task}",
        checkpoint=embedder_checkpoint,
    output:
        "results/scores/{embedder}/{task}.json",
    log:
        "logs/probe/{embedder}/{task}.log",
    benchmark:
        "logs/benchmarks/probe/{embedder}/{task}.tsv"
    conda:
        "../../envs/msmbench.yaml"
    threads: RES["threads"]
    resources:
        gpu=RES["probe_gpus"],
    params:
        settings=as_json(config["probe"]),
        info=lambda wc: as_json(model_info(wc.embedder)),
        seed=SEED,
    shell:
        "msmbench probe --embeddings {input.embeddings} --task-dir {input.task} --out {output} "
        "--settings {params.settings:q} --model-info {params.info:q} --seed {params.seed} --threads {threads} 2> {log}"
