//! Which front-end an expansion is for.

/// The front-end crate whose re-export of the attribute was used. Each front-end re-exports
/// its own entry point (`coalesce_tokio` as `singleflight_tokio::coalesce`, ...), so the
/// macro knows the runtime without looking at the user's manifest.
#[derive(Clone, Copy)]
pub(crate) enum FrontEnd {
    Blocking,
    Tokio,
    Smol,
    AsyncStd,
}

impl FrontEnd {
    /// The crate's name as a dependency is spelled by default (`crate = ...` overrides it).
    pub(crate) fn crate_name(self) -> &'static str {
        match self {
            Self::Blocking => "singleflight_blocking",
            Self::Tokio => "singleflight_tokio",
            Self::Smol => "singleflight_smol",
            Self::AsyncStd => "singleflight_async_std",
        }
    }

    /// Whether it coalesces `async fn`s (otherwise plain, blocking `fn`s).
    pub(crate) fn is_async(self) -> bool {
        !matches!(self, Self::Blocking)
    }
}
