"""Training loops that are not continual learning: pretraining the saliency predictor and initialising it."""
