//! Enter the namespaces of a process and run a command there.
