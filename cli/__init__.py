"""The `lead-stream` command line (import as lead_stream.cli); nothing in the library imports it."""
