"""Prediction: tile plans and blending, the tiled predictor, uncertainty maps."""
