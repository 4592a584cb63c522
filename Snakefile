# msmbench: fetch -> features -> pretrain -> embed -> probe -> aggregate -> figures / tables / paper.
# `snakemake --cores all` runs the embedded default (config/default.yaml); the paper run is
# `snakemake --configfile config/paper.yaml --profile workflow/profiles/slurm`.
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless config files are named on the command line: those then stand alone
# (merging them over the default would silently inherit its small CPU settings).
if not workflow.overwrite_configfiles:

    configfile: "config/default.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    task="|".join(map(re.escape, TASKS)),
    model="|".join(map(re.escape, PRETRAINED + INITIAL)),
    embedder="|".join(map(re.escape, EMBEDDERS)),
    pretrained="|".join(map(re.escape, PRETRAINED)),


include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/bench.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


onsuccess:
    shell("msmbench summary")
