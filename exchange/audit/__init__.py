"""Durable audit records: group commit to the database (writer) and a local spool for when
the database cannot take them (spool)."""
