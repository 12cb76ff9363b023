"""Training: settings and recipes, paired data, the loop, validation, warm starts, checkpoints."""
