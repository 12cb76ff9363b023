"""The engine: data, training, tiled prediction, model files, tasks. numpy + torch only."""
