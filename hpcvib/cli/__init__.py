"""The command line: `hpcvib <command>` (commands.py) and `make demo` (demo.py)."""
