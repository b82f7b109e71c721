"""The server side: configuration, supervisor, workers, command line."""
