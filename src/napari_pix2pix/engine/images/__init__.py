"""Images in and out: files, zarr stores, degradations synthesized for training, procedural phantoms."""
