//! Rate limiting with sliding-window counters.

mod store;
mod window;

pub use store::{CounterStore, StoreError};
pub use window::{Decision, WindowCounter};
