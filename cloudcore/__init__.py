"""cloudcore"""
