"""One module per `syscribe` subcommand: argument handling and output only; the work is elsewhere."""
