//! faultline node agent.
