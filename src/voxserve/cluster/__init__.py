"""voxserve on Ray Serve (`pip install 'voxserve[ray]'`): one ingress deployment serving the whole HTTP API, and
model replicas spread over a cluster. Nothing else in voxserve imports this package."""
