"""msmbench.train"""
