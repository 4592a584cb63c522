"""msmbench.provenance"""
