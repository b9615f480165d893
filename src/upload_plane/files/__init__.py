"""Files: read, list, download and delete the evidence an upload produced."""
