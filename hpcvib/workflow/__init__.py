"""Jobs: the job file, the resumable database, the stage registry and pipeline, per-item batch errors."""
