# paper/main.pdf, built only when asked for (needs a LaTeX engine; README says how to get one).


rule paper_pdf:
    input:
        tex="paper/main.tex",
        table=rules.table.output.tex,
        numbers=rules.table.output.numbers,
        figures=expand("figures/{name}.pdf", name=FIGURES),
    output:
        "paper/main.pdf",
    log:
        "logs/paper/main.log",
    conda:
        "../../envs/msmbench.yaml"
    shell:
        "cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error main.tex > ../{log} 2>&1"
