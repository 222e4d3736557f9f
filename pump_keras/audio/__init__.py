"""Audio in: reading WAV files (`wavfile`), decoding them in the graph (`decode`), and spectrogram features (`features`)."""
