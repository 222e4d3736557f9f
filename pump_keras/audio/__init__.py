"""Audio in: WAV files on the host (`wavfile`), decoding in the graph (`decode`), spectrogram features (`features`)."""
