# Pretraining (one job per backbone x size), random-init checkpoints, and reconstructions.


rule pretrain:
    input:
        features=f"results/features/{CORPUS}/meta.json",
        disjoint=f"results/features/{CORPUS}/disjoint.json",  # no task clip in the pretraining data
    output:
        weights="results/models/{pretrained}/model.safetensors",
        spec="results/models/{pretrained}/model.json",
        metrics="results/models/{pretrained}/metrics.csv",
    log:
        "logs/pretrain/{pretrained}.log",
    benchmark:
        "logs/benchmarks/pretrain/{pretrained}.tsv"
    conda:
        "../../envs/msmbench.yaml"
    threads: RES["threads"]
    resources:
        gpu=RES["pretrain_gpus"],
        runtime=RES["pretrain_runtime_min"],
        mem_mb=RES["pretrain_mem_mb"],
    params:
        launcher=launcher(RES["pretrain_gpus"]),
        features=lambda wc, input: os.path.dirname(input.features),
        out=lambda wc, output: os.path.dirname(output.weights),
        model=lambda wc: as_json(model_choice(wc.pretrained)),
        train=as_json(config["pretrain"]),
        seed=SEED,
    shell:
        "{params.launcher} pretrain --features {params.features} --out {params.out} "
        "--model {params.model:q} --train {params.train:q} --seed {params.seed} --threads {threads} 2> {log}"


rule init_model:
    output:
        weights="results/init/{model}/model.safetensors",
        spec="results/init/{model}/model.json",
    log:
        "logs/init/{model}.log",
    conda:
        "../../envs/msmbench.yaml"
    params:
        out=lambda wc, output: os.path.dirname(output.weights),
        model=lambda wc: as_json(model_choice(wc.model)),
        seed=SEED,
    shell:
        "msmbench init-model --out {params.out} --model {params.model:q} --seed {params.seed} 2> {log}"


rule reconstruct:
    input:
        weights=rules.pretrain.output.weights,
        features=rules.pretrain.input.features,
    output:
        "results/models/{pretrained}/reconstruction.npz",
    log:
        "logs/reconstruct/{pretrained}.log",
    conda:
        "../../envs/msmbench.yaml"
    params:
        clips=config["report"]["reconstruction_clips"],
        checkpoint=lambda wc, input: os.path.dirname(input.weights),
        features=lambda wc, input: os.path.dirname(input.features),
        seed=SEED,
    shell:
        "msmbench reconstruct --checkpoint {params.checkpoint} --features {params.features} "
        "--out {output} --clips {params.clips} --seed {params.seed} 2> {log}"
