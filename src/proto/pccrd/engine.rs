//! The sans-IO discovery engine (placeholder until the state machine lands).
