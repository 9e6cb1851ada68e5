"""The DVC stages' entry points: `python -m stages.NAME` from the project root (dvc.yaml's commands)."""
