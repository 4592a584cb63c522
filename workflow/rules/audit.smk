# `snakemake --cores 1 audit`: re-verify the lineage of the paper's tables and figures, export it as PROV-JSON.


rule audit:
    input:
        final_outputs(),
    output:
        report="results/audit/audit.txt",
        prov="results/audit/lineage.prov-json",
    log:
        "logs/audit.log",
    conda:
        "../../envs/msmbench.yaml"
    shell:
        "msmbench audit --all --report {output.report} --prov-json {output.prov} 2> {log}"
