"""EdgeHub: the edge end of the cloud-edge channel, and the edge node's certificate bootstrap and rotation."""
