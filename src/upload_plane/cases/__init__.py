"""Cases, their logs and the files in them; who may see what."""
