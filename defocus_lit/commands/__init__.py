"""The `defocus-lit` subcommands, one module each: `configure_parser(parser)` declares the options and
`run(args) -> int` does the work, raising `UserError` for bad input (printed by `defocus_lit.cli`)."""
