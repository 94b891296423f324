"""`python -m lead_stream.cli ...` runs the `lead-stream` command."""

from lead_stream.cli.main import main

main()
