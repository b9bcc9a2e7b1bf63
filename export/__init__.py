"""Plain module -> ONNX (float and int8), checks, parity against PyTorch, metadata, validation."""
