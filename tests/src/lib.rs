//! Shared helpers for the process tests: start the daemon, make media with ffmpeg, read HTTP streams.
