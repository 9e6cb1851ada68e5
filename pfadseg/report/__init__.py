"""Reports: the papers' numbers, tables, figures and the ablation grid."""
