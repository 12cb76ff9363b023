"""Qt widgets of the napari plugin (imported by napari on demand, never at package import)."""
