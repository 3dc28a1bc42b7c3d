"""Stage 1: build, train, evaluate and predict with Keras gender classifiers.

TensorFlow is imported only inside the functions that need it: the image loader, the metrics
and the errors here are used by every later stage on nodes that have no TensorFlow.
"""
