//! Applying changes inside the writer's open transaction, one module per
//! [`ChangeFamily`]: the dispatcher below routes each change to its family.

mod advisories;
mod commands;
mod console;
mod credentials;
mod fleet;
mod monitoring;
mod network;
mod onboarding;
mod ota;

use sqlx::AnyConnection;

use crate::{Change, ChangeFamily, StoreError};

/// Applies one change; returns the new value of a counter it bumped.
pub(super) async fn apply(
    c: &mut AnyConnection,
    change: &Change,
) -> Result<Option<i64>, StoreError> {
    match change.family() {
        ChangeFamily::Fleet => fleet::apply(c, change).await,
        ChangeFamily::Credentials => credentials::apply(c, change).await,
        ChangeFamily::Onboarding => onboarding::apply(c, change).await,
        ChangeFamily::Ota => ota::apply(c, change).await,
        ChangeFamily::Network => network::apply(c, change).await,
        ChangeFamily::Commands => commands::apply(c, change).await,
        ChangeFamily::Monitoring => monitoring::apply(c, change).await,
        ChangeFamily::Console => console::apply(c, change).await,
        ChangeFamily::Advisories => advisories::apply(c, change).await,
    }
}

/// A change that reached the wrong family's module: a bug in the routing.
fn misrouted(change: &Change) -> StoreError {
    StoreError::Internal(format!(
        "change {:?} was routed to the wrong family",
        change.family()
    ))
}
