"""Model files and exchange formats: safetensors model files, bioimage.io packages, ONNX, TorchScript."""
