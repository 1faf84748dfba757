"""MetaManager: the edge's object store and the router between edge modules and the cloud."""
