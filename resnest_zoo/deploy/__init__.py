"""Files for use outside this package: model-only safetensors for a model hub."""
