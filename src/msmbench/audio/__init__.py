"""msmbench.audio"""
