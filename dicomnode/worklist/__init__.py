"""Triage worklist: SQLite store, HTTP API and page, HL7 priority messages to the RIS."""
