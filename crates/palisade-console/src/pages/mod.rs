//! The console's pages, one module each.

pub mod alerts;
pub mod audit;
pub mod certificates;
pub mod device;
pub mod devices;
pub mod overview;
pub mod posture;
pub mod releases;
pub mod rollouts;
pub mod sites;
pub mod suppliers;
pub mod unmanaged;
