"""The `truesource` commands: one module each, registering its options and its `run` (sensor/commands/parser.py
builds the parser from them; sensor/cli.py calls `args.run(args)`)."""
