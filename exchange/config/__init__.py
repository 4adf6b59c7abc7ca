"""Configuration as code (SPEC §6): the document's shape (schema), its validation (validate),
making the database match it (apply), the database back as a document (export), and files."""
