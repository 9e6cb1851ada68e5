"""Synthetic anomalies: Perlin masks, the precomputed bank and the on-device batch composer."""
