# Aggregation, the results table, headline numbers and the figures (all declared for --report).


rule aggregate:
    input:
        expand("results/scores/{embedder}/{task}.json", embedder=EMBEDDERS, task=TASKS),
    output:
        long="results/summary/scores.csv",
        summary="results/summary/summary.csv",
    log:
        "logs/report/aggregate.log",
    conda:
        "../../envs/msmbench.yaml"
    shell:
        "msmbench aggregate --scores {input} --out-long {output.long} --out-summary {output.summary} 2> {log}"


rule table:
    input:
        rules.aggregate.output.summary,
    output:
        md=report(
            "paper/tables/results.md",
            caption="../report/results_table.rst",
            category="Results",
        ),
        csv="paper/tables/results.csv",
        tex="paper/tables/results.tex",
        numbers="paper/tables/numbers.tex",
    log:
        "logs/report/table.log",
    conda:
        "../../envs/msmbench.yaml"
    params:
        tasks=TASKS,
    shell:
        "msmbench table --summary {input} --out-dir paper/tables --numbers {output.numbers} --tasks {params.tasks} 2> {log}"


rule figure_task_scores:
    input:
        rules.aggregate.output.summary,
    output:
        png=report(
            "figures/task_scores.png",
            caption="../report/task_scores.rst",
            category="Figures",
        ),
        pdf="figures/task_scores.pdf",
    log:
        "logs/figures/task_scores.log",
    conda:
        "../../envs/msmbench.yaml"
    params:
        tasks=TASKS,
    shell:
        "msmbench figure task_scores --inputs {input} --out figures/task_scores --tasks {params.tasks} 2> {log}"


rule figure_overall_vs_params:
    input:
        rules.aggregate.output.summary,
    output:
        png=report(
            "figures/overall_vs_params.png",
            caption="../report/overall_vs_params.rst",
            category="Figures",
        ),
        pdf="figures/overall_vs_params.pdf",
    log:
        "logs/figures/overall_vs_params.log",
    conda:
        "../../envs/msmbench.yaml"
    shell:
        "msmbench figure overall_vs_params --inputs {input} --out figures/overall_vs_params 2> {log}"


rule figure_pretrain_loss:
    input:
        expand("results/models/{pretrained}/metrics.csv", pretrained=PRETRAINED),
    output:
        png=report(
            "figures/pretrain_loss.png",
            caption="../report/pretrain_loss.rst",
            category="Figures",
        ),
        pdf="figures/pretrain_loss.pdf",
    log:
        "logs/figures/pretrain_loss.log",
    conda:
        "../../envs/msmbench.yaml"
    shell:
        "msmbench figure pretrain_loss --inputs {input} --out figures/pretrain_loss 2> {log}"


rule figure_reconstruction:
    input:
        rules.reconstruct.output[0],
    output:
        png=report(
            "figures/reconstruction_{pretrained}.png",
            caption="../report/reconstruction.rst",
            category="Figures",
            subcategory="Reconstructions",
        ),
        pdf="figures/reconstruction_{pretrained}.pdf",
    log:
        "logs/figures/reconstruction_{pretrained}.log",
    conda:
        "../../envs/msmbench.yaml"
    shell:
        "msmbench figure reconstruction --inputs {input} --out figures/reconstruction_{wildcards.pretrained} 2> {log}"
