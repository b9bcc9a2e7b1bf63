"""The dataset readers, one module each: a reader turns files (or an embedded set) into splits."""
