"""Data acquisition, layout checks, procedural data and image reading."""
