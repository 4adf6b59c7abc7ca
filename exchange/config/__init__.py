"""Configuration as code (docs/configuration-file.md#configuration-file): the document's shape (schema),
its validation (validate), making the database match it (apply), the database back as a document
(export), and files."""
