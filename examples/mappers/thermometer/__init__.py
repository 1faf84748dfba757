"""A sample KubeEdge device mapper over DMI (v1beta1): simulated thermometers. See README.md here."""
