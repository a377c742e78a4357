//! The simulated implementation of the HAL (in progress).
