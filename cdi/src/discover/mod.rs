//! GPU discovery (being written)
