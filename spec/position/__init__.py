"""Positional encodings: RoPE, ALiBi and their harmonic combination."""
