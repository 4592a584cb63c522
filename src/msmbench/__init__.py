"""msmbench: masked spectrogram modelling with Transformer, Mamba and xLSTM backbones, end to end."""

__version__ = "0.1.0"
