"""pfadseg: reproducible PFADSeg / DeSTSeg / ADPS anomaly detection and segmentation."""

__version__ = "0.1.0"
