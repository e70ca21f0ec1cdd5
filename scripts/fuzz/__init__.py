"""Coverage-guided fuzzing of the wire layer: ``python -m scripts.fuzz TARGET`` (docs/testing.md)."""
