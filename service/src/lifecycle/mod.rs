//! What the server does by itself over time: staging of closed uploads swept at start-up
//! ([`staging`]), content no file refers to collected ([`garbage`]).

pub mod garbage;
pub mod staging;

pub use garbage::{Collected, GarbageCollector};
pub use staging::sweep_orphaned_staging;
