"""Decoding of AT Protocol wire formats: firehose frames, CAR files, records as atproto JSON."""
