"""Video data: the synthetic action generator, sources, sampling, the loader, video files."""
