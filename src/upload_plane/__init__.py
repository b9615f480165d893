"""upload-plane: a presigned-URL control plane for resumable uploads straight into S3."""
