"""`voxserve bench`: load generation against any speech endpoint, in-process baselines, reports and comparisons."""
