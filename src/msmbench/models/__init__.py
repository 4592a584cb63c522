"""msmbench.models"""
