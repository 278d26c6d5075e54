//! Palisade's HTTP surface: the HTTPS listener's accept loop, the operator API,
//! EST and the device endpoints, over the control plane's services.

pub mod api;
pub use api::views;
pub mod est;
mod listener;

pub use listener::{Listener, serve};
