"""msmbench.data"""
