"""The engine's ground floor: typed progress updates, devices and precision, tasks, intensity normalization."""
