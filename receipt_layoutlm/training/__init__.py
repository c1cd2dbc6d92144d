"""Training: the recipe (labels, tags, split, thinning), features (windows), the run itself."""
