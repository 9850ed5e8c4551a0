"""`python -m prune.pipeline`: one command from a model to a measured frame rate on a device.

It runs the commands a user would chain by hand, each as its own process (`python -m
latency_model collect`, `train`, `evaluate`; `python -m prune` for the reference, the pruned
network and the reference trained as long as the pruned one; `python -m compile` and `python -m
runner bench --check` for each network), records every finished stage in `pipeline.json`, and
writes `report.md` beside the plots and JSON the stages made. A rerun skips the stages whose
command and outputs are unchanged; each command resumes its own unfinished work.
"""
