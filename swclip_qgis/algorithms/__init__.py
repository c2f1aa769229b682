"""Processing algorithms of the SW-CLIP provider."""
