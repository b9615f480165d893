"""Uploads: part plans, object keys, the upload state machine and the multipart flow."""
