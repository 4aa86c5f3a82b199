"""Files and Batch APIs answered by the proxy, since Bastion has neither.

  shapes   OpenAI's file/batch objects, JSONL line formats, input validation (pure)
  lines    one input line -> the same plan a live request gets (pure, via core/planner)
  blobs    file bytes in a directory next to the database, optionally encrypted per chunk
  store    metadata, batch leases and per-line results in SQLite
  upload   the multipart upload, streamed to a blob
  server   the in-process HTTP server the addon points /v1/files and /v1/batches at
  runner   runs batches: leases, bounded concurrency, resume, finalize
  pacing   rate limit and backoff (pure timing); validate: the input file check
  access   one access-log record per line, marked as batch work
"""
