from fmuia.cli import entry

entry()
