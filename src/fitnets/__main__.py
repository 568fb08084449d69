from fitnets.cli import entry

entry()
