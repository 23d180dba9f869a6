"""The ``tatlas`` command: thin commands (arguments -> a frozen config -> one library call) in one
typer app; expected problems become one-line errors (:mod:`.common`)."""

import gc

# The command's process keeps what `import tatlas` made (torch above all) to its end: out of the
# garbage collector's sight from here on, typer's and rich's imports and every later collection
# skip those ~170,000 objects (see tatlas/__init__.py; cli.common.freeze_imports does the same for
# what each command imports).
gc.freeze()
