"""CloudHub: the cloud end of the cloud-edge channel, and owner of the CA and server certificate."""
