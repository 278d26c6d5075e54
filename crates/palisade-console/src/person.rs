//! Who is asking: a signed-in person (the session extractor lives in
//! `auth`).

use palisade_control::accounts::SignedIn;
use palisade_core::role::Access;

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct Person(pub SignedIn);

impl Person {
    /// The audit actor.
    pub fn actor(&self) -> String {
        self.0.actor()
    }

    /// Whether their role permits `access`.
    pub fn may(&self, access: Access) -> bool {
        self.0.role.permits(access)
    }
}
