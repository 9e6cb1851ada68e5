"""DVC stages: each a StageDef beside its stage function; graph.py writes dvc.yaml from them."""
