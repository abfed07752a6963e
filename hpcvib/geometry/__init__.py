"""Atoms and cells: reading/writing structures, neighbour lists, builders of defects and amorphous cells."""
