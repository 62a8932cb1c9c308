"""Task recipes over the engine: each is a thin function of a model and images."""
