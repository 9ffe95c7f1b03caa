"""Training: the loop and its phases, run folders, CLIP pretraining, data preparation, conversion."""
