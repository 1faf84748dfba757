"""Pieces shared by cloudcore and edgecore: messages, module bus, config, PKI, logging, lifecycle."""
