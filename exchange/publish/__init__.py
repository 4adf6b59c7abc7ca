"""Published issuer documents (docs/endpoints.md#published-issuer-url): rendered once for serving
and publishing (``documents``), written to a directory or S3 and read back (``targets``,
``service``)."""
