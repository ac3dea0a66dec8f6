//! The service supervisor (being written).
