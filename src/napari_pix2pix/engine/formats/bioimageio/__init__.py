"""bioimage.io model packages: reading them back (no extra needed) and writing them (the bioimageio extra)."""
