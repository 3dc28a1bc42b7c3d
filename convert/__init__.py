"""Stage 2: Keras models to ONNX with preprocessing baked in, parity-checked, optional INT8."""
