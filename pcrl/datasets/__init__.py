"""Dataset layouts: registry, download, archives, shards, verification and manifests."""
