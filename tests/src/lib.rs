//! Real-runtime testbed.
