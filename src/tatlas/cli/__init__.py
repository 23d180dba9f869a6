"""The ``tatlas`` command: thin commands (arguments -> a frozen config -> one library call) in one
typer app; expected problems become one-line errors (:mod:`.common`)."""
