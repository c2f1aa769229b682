"""Training objectives other than the caption-based ones in :mod:`swclip_core.train`."""
