"""What a bundle is worth: scoring on data, the out-of-fold predictions the studio reads,
reports, the model card and their figures."""
