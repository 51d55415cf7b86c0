// A reuse window hands a result to later calls with an equal key, after its flight: a key
// made from an address would reach whatever instance lives there next.
use std::sync::Arc;

use singleflight_blocking::coalesce;

struct Session {
    user: String,
}

impl Session {
    #[coalesce(reuse = std::time::Duration::from_secs(30), key: (usize, String) = (self as *const Self as usize, endpoint.clone()))]
    fn me(&self, endpoint: String) -> String {
        format!("{endpoint} as {}", self.user)
    }

    #[coalesce(reuse = std::time::Duration::from_secs(30), key: usize = Arc::as_ptr(self) as usize)]
    fn profile(self: Arc<Self>) -> String {
        self.user.clone()
    }

    #[coalesce(reuse = std::time::Duration::from_secs(30), key: String = format!("{:p}", self))]
    fn settings(&self) -> String {
        self.user.clone()
    }

    #[coalesce(reuse = std::time::Duration::from_secs(30), key: usize = std::ptr::from_ref(self).addr())]
    fn inbox(&self) -> String {
        self.user.clone()
    }
}

// Without `self` too: the key is the address of what the argument points at.
#[coalesce(reuse = std::time::Duration::from_secs(30), key: usize = std::ptr::addr_of!(**session) as usize)]
fn greeting(session: &Session) -> String {
    session.user.clone()
}

fn main() {}
