# Datasets: the synthetic suite (default) or the HEAR 2021 archives (paper), and log-mel shards.


if DATA["source"] == "synthetic":

    rule synth_task:
        output:
            directory("data/tasks/{task}"),
        log:
            "logs/data/synth_{task}.log",
        benchmark:
            "logs/benchmarks/synth_task/{task}.tsv"
        conda:
            "../../envs/msmbench.yaml"
        params:
            seed=DATA["synthetic"]["seed"],
            scale=DATA["synthetic"]["scale"],
        shell:
            "msmbench synth-task {wildcards.task} --out {output} --seed {params.seed} --scale {params.scale} 2> {log}"

else:

    rule fetch_task:
        output:
            directory("data/tasks/{task}"),
        log:
            "logs/data/fetch_{task}.log",
        benchmark:
            "logs/benchmarks/fetch_task/{task}.tsv"
        retries: 2
        conda:
            "../../envs/msmbench.yaml"
        params:
            settings=as_json(DATA["hear"]),
        shell:
            "msmbench fetch {wildcards.task} --out {output} --settings {params.settings:q} 2> {log}"


rule synth_pretrain_corpus:
    output:
        "data/pretrain/synthetic/files.csv",
    log:
        "logs/data/synth_pretrain.log",
    benchmark:
        "logs/benchmarks/synth_pretrain.tsv"
    conda:
        "../../envs/msmbench.yaml"
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        seed=DATA["synthetic"]["seed"],
        clips=DATA["synthetic"]["pretrain_clips"],
    shell:
        "msmbench synth-pretrain --out {params.out} --seed {params.seed} --clips {params.clips} 2> {log}"


rule features:
    input:
        generated_pretrain_sources,
    output:
        "results/features/{corpus}/meta.json",
    log:
        "logs/features/{corpus}.log",
    benchmark:
        "logs/benchmarks/features/{corpus}.tsv"
    conda:
        "../../envs/msmbench.yaml"
    threads: 8  # capped at --cores by Snakemake
    params:
        sources=pretrain_sources(),
        out=lambda wc, output: os.path.dirname(output[0]),
        shard_clips=DATA["pretrain"]["shard_clips"],
        skip_bad="--skip-bad" if DATA["pretrain"]["skip_bad_files"] else "--no-skip-bad",
    shell:
        "msmbench features --sources {params.sources} --out {params.out} "
        "--shard-clips {params.shard_clips} {params.skip_bad} --workers {threads} 2> {log}"


rule check_disjoint:
    input:
        features="results/features/{corpus}/meta.json",
        tasks=expand("data/tasks/{task}", task=TASKS),
    output:
        "results/features/{corpus}/disjoint.json",
    log:
        "logs/features/{corpus}_disjoint.log",
    conda:
        "../../envs/msmbench.yaml"
    params:
        features=lambda wc, input: os.path.dirname(input.features),
    shell:
        "msmbench check-disjoint --features {params.features} --tasks {input.tasks} --out {output} 2> {log}"
