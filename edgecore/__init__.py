"""edgecore"""
