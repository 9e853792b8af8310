//! Durable state (being written).
