"""DynamicController: what edge MetaServers ask of the cloud (writes now; subscriptions to other kinds next)."""
