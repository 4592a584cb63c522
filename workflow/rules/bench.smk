# `snakemake --cores 1 bench` on a GPU machine: the sequence-length scaling study (table + figure).


rule bench_scaling:
    output:
        records="results/bench/scaling.json",
        table="results/bench/scaling.txt",
    log:
        "logs/bench/scaling.log",
    conda:
        "../../envs/msmbench.yaml"
    resources:
        gpu=1,
    params:
        backbones=config["models"]["backbones"],
        settings=as_json(config["bench"]),
    shell:
        "msmbench bench --backbones {params.backbones} --settings {params.settings:q} "
        "--out {output.records} --table {output.table} 2> {log}"


rule figure_scaling:
    input:
        rules.bench_scaling.output.records,
    output:
        png=report(
            "figures/scaling.png", caption="../report/scaling.rst", category="Figures"
        ),
        pdf="figures/scaling.pdf",
    log:
        "logs/figures/scaling.log",
    conda:
        "../../envs/msmbench.yaml"
    shell:
        "msmbench figure scaling --inputs {input} --out figures/scaling 2> {log}"


rule bench:
    input:
        rules.bench_scaling.output.table,
        rules.figure_scaling.output.pdf,
