"""Durable state: the spool of received files, the SQLite index, the job queue and the outbox."""
