"""Architectures, one module each (destseg.py, adps.py); registry.py picks one by model.arch."""
