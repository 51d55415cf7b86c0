//! The attribute's options: `#[coalesce(shared, key: K = expr, detached, timeout = d, reuse = d, ...)]`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, Path, Token, Type};

/// A custom key: its type (it names the function's `static` group) and how to compute it.
pub(crate) struct CustomKey {
    pub(crate) ty: Type,
    pub(crate) expr: Expr,
}

/// Everything the attribute said.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) key: Option<CustomKey>,
    /// The span of the `shared` flag, if set: a method's calls on every instance share.
    pub(crate) shared: Option<Span>,
    /// The span of the `detached` flag, if set.
    pub(crate) detached: Option<Span>,
    /// Set by `in_impl`: an associated function without `self`.
    pub(crate) in_impl: bool,
    pub(crate) timeout: Option<Expr>,
    /// The reuse window: how long a published value serves later calls for its key.
    pub(crate) reuse: Option<Expr>,
    /// A `LeaderDropPolicy` variant.
    pub(crate) leader_drop: Option<Ident>,
    pub(crate) observer: Option<Expr>,
    /// The number of shards of the group's map.
    pub(crate) shards: Option<Expr>,
    /// The name of the generated group accessor.
    pub(crate) group: Option<Ident>,
    /// The path of the front-end crate, if renamed.
    pub(crate) krate: Option<Path>,
}

const KNOWN: &str = "expected one of `shared`, `key: <Type> = <expr>`, `detached`, `in_impl`, `timeout = <Duration>`, \
                     `reuse = <Duration>`, `leader_drop = Takeover | FailWaiters`, `observer = <expr>`, \
                     `shards = <expr>`, `group = <name>`, `crate = <path>`";

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut options = Self::default();
        while !input.is_empty() {
            let name: Ident = if input.peek(Token![crate]) {
                let token: Token![crate] = input.parse()?;
                Ident::new("crate", token.span)
            } else {
                input
                    .parse()
                    .map_err(|e| syn::Error::new(e.span(), KNOWN))?
            };
            let duplicate = |set: bool| {
                if set {
                    Err(syn::Error::new(
                        name.span(),
                        format!("`{name}` is given twice"),
                    ))
                } else {
                    Ok(())
                }
            };
            match name.to_string().as_str() {
                "key" => {
                    duplicate(options.key.is_some())?;
                    if input.peek(Token![=]) {
                        return Err(syn::Error::new(
                            name.span(),
                            "a custom key needs its type, because the type names the function's \
                             `static` group: write `key: <Type> = <expr>`, e.g. \
                             `key: String = format!(\"user:{id}\")`",
                        ));
                    }
                    input.parse::<Token![:]>()?;
                    let ty: Type = input.parse()?;
                    input.parse::<Token![=]>()?;
                    let expr: Expr = input.parse()?;
                    options.key = Some(CustomKey { ty, expr });
                }
                "shared" => {
                    duplicate(options.shared.is_some())?;
                    options.shared = Some(name.span());
                }
                "detached" => {
                    duplicate(options.detached.is_some())?;
                    options.detached = Some(name.span());
                }
                "in_impl" => {
                    duplicate(options.in_impl)?;
                    options.in_impl = true;
                }
                "timeout" => {
                    duplicate(options.timeout.is_some())?;
                    input.parse::<Token![=]>()?;
                    options.timeout = Some(input.parse()?);
                }
                "reuse" => {
                    duplicate(options.reuse.is_some())?;
                    input.parse::<Token![=]>()?;
                    options.reuse = Some(input.parse()?);
                }
                "leader_drop" => {
                    duplicate(options.leader_drop.is_some())?;
                    input.parse::<Token![=]>()?;
                    let policy: Ident = input.parse()?;
                    if policy != "Takeover" && policy != "FailWaiters" {
                        return Err(syn::Error::new(
                            policy.span(),
                            "expected `Takeover` or `FailWaiters`",
                        ));
                    }
                    options.leader_drop = Some(policy);
                }
                "observer" => {
                    duplicate(options.observer.is_some())?;
                    input.parse::<Token![=]>()?;
                    options.observer = Some(input.parse()?);
                }
                "shards" => {
                    duplicate(options.shards.is_some())?;
                    input.parse::<Token![=]>()?;
                    options.shards = Some(input.parse()?);
                }
                "group" => {
                    duplicate(options.group.is_some())?;
                    input.parse::<Token![=]>()?;
                    options.group = Some(input.parse()?);
                }
                "crate" => {
                    duplicate(options.krate.is_some())?;
                    input.parse::<Token![=]>()?;
                    options.krate = Some(Path::parse_mod_style(input)?);
                }
                _ => {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("unknown option `{name}`: {KNOWN}"),
                    ));
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(options)
    }
}
