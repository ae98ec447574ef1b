//! Integration-test harness against the real local stack.
