"""Networks: teacher, student, segmentation net and one module per PFADSeg component."""
