"""The napari side of napari-pix2pix: manifest commands, widgets, sample data.

Thin by design: it turns layers into arrays and settings, runs the engine in a worker
thread and turns results into layers. Importing this package imports neither napari nor
Qt; the widgets live in :mod:`napari_pix2pix._napari._qt` and are imported by napari on
demand.

Modules
-------
layers
    Layers to arrays and back (``add_result`` keeps the input's spatial metadata; ``add_overlay``
    and ``add_labels_result`` show maps about a result over it).
choices
    Model choices per task: bundled models and the remembered model files.
jobs
    The generator functions the widgets run in worker threads.
sample_data
    File > Open Sample > Pix2Pix.
"""
