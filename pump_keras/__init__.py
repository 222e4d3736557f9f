"""pump_keras: hear when an industrial pump goes wrong.

Audio -> spectrogram image -> EfficientNetV2-S with improved CBAM attention
-> normal/abnormal, after "EfficientNetV2 Pump Anomaly Detection Method Based
on Improved CBAM".
"""

__version__ = "0.1.0"
