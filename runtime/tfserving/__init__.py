"""TF Serving's configuration formats, read without TensorFlow or tensorflow-serving-api:
the model_config_list and BatchingParameters text protos, its command-line flags,
and `ringserve migrate`."""
