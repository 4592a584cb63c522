"""msmbench.embed"""
