"""The command line: one thin module per command group; the library does the work."""
