"""What the tests and the benchmark share: the gateway run as a real process, and generated image data."""
