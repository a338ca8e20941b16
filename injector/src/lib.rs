//! FUSE IO-fault injector.
