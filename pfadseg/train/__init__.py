"""Training: losses, the shared loop, and the student and segmentation stages."""
