"""The runners' glue, apart from the library: how Snakemake reads dvc.yaml (:mod:`.dag`),
the SLURM check before a cluster run (:mod:`.preflight`) and the known-answer study's
driver (:mod:`.study`). No stage imports these, so none of them is a stage's code dep."""
