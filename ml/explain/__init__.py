"""Heat maps of what raised a fold model's stroke score (Grad-CAM and kin), and their
faithfulness."""
