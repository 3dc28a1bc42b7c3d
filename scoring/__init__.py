"""Stage 3: a Ray Data batch job from an image manifest to Parquet, every row accounted for."""
