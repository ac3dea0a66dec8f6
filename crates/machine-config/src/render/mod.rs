//! Renderers of the files the node writes (being written).
