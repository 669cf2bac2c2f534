//! Console history on disk: each server's console lines (and its install output) appended to
//! bounded segment files off the console thread, read for tails of stopped servers and after
//! restarts; and the record of each crash.

pub mod segments;
