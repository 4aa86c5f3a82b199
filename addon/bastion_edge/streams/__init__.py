"""Incremental codecs for bodies that stream through: SSE events, multipart forms."""
