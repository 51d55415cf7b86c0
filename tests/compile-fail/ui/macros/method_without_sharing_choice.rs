// A method's instance often says whose request it is (a user's token): the attribute
// refuses to guess whether two instances' calls may share a result.
use std::sync::Arc;

use singleflight_blocking::coalesce;

struct Client {
    token: String,
}

impl Client {
    #[coalesce]
    fn me(&self, endpoint: String) -> String {
        format!("{endpoint} as {}", self.token)
    }

    #[coalesce(timeout = std::time::Duration::from_secs(1))]
    fn reset(&mut self, endpoint: String) -> String {
        format!("{endpoint} as {}", self.token)
    }

    #[coalesce]
    fn into_me(self, endpoint: String) -> String {
        format!("{endpoint} as {}", self.token)
    }
}

struct AsyncClient {
    token: String,
}

impl AsyncClient {
    #[singleflight_tokio::coalesce(detached)]
    async fn me(self: Arc<Self>, endpoint: String) -> String {
        format!("{endpoint} as {}", self.token)
    }
}

fn main() {}
