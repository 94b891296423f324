"""Arrow schemas of every table lead-stream writes, defined once and versioned (import as lead_stream.schemas)."""
