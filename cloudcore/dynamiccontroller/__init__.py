"""DynamicController: what edge MetaServers ask of the cloud (reads, writes, watch subscriptions, discovery)."""
