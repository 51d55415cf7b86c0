//! Reading the annotated function: what its arguments are, what it returns, and every
//! reason it can't be coalesced, each reported at the offending tokens.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident};
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments, Receiver, ReturnType,
    Type,
};

use crate::front_end::FrontEnd;
use crate::options::Options;

/// One argument besides the receiver.
pub(crate) struct Arg {
    /// The name the generated function gives it: the pattern's identifier, or `__arg<i>`.
    pub(crate) ident: Ident,
    /// The name error messages use (`id`, or `#2` for a destructuring pattern).
    pub(crate) display: String,
    pub(crate) ty: Type,
}

/// What the work returns, and so what every caller receives.
pub(crate) enum Output {
    /// `-> T` (or nothing: `()`): called with `call`, callers get `Result<T, Error>`.
    Value(Box<Type>),
    /// `-> Result<V, E>`: called with `try_call`, callers get `Result<V, Error<E>>`.
    Fallible { ok: Box<Type>, err: Box<Type> },
}

/// The parts of the function the expansion needs.
pub(crate) struct Signature {
    pub(crate) receiver: Option<Receiver>,
    pub(crate) args: Vec<Arg>,
    pub(crate) output: Output,
}

/// Collects errors so that one compile shows every problem, not just the first.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let error = syn::Error::new(span, message);
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

impl Signature {
    pub(crate) fn read(front_end: FrontEnd, item: &ItemFn, options: &Options) -> syn::Result<Self> {
        let sig = &item.sig;
        let name = &sig.ident;
        let mut errors = Errors::default();

        match (front_end.is_async(), &sig.asyncness) {
            (true, None) => errors.push(
                sig.fn_token.span,
                format!(
                    "`{}`'s #[coalesce] is for `async fn`; for a plain `fn` use \
                     singleflight-blocking's #[coalesce]",
                    front_end.crate_name()
                ),
            ),
            (false, Some(asyncness)) => errors.push(
                asyncness.span,
                "singleflight-blocking's #[coalesce] is for plain `fn`; for an `async fn` use the \
                 #[coalesce] of singleflight-tokio, singleflight-smol or singleflight-async-std",
            ),
            _ => {}
        }
        if let Some(constness) = &sig.constness {
            errors.push(
                constness.span,
                "a `const fn` can't be coalesced: its calls run at compile time",
            );
        }
        if let Some(unsafety) = &sig.unsafety {
            errors.push(unsafety.span, "#[coalesce] does not support `unsafe fn`");
        }
        if let Some(abi) = &sig.abi {
            errors.push(
                abi.span(),
                "#[coalesce] does not support `extern` functions",
            );
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(
                variadic.span(),
                "#[coalesce] does not support variadic functions",
            );
        }
        for param in &sig.generics.params {
            match param {
                GenericParam::Lifetime(_) => {}
                GenericParam::Type(_) | GenericParam::Const(_) => errors.push(
                    param.span(),
                    format!(
                        "a #[coalesce] fn can't be generic: `{name}` has one group, a `static`, \
                         and a static can't depend on type parameters; write one non-generic \
                         #[coalesce] fn per type (each may call a generic helper)"
                    ),
                ),
            }
        }

        let mut receiver = None;
        let mut args = Vec::new();
        for (index, input) in sig.inputs.iter().enumerate() {
            match input {
                FnArg::Receiver(r) => {
                    if options.detached.is_some() && borrows_self(r) {
                        errors.push(
                            r.span(),
                            "`detached` work is spawned and outlives its caller, so it can't \
                             borrow `self`: take `self` by value or as `self: Arc<Self>`, or drop \
                             `detached`",
                        );
                    }
                    receiver = Some(r.clone());
                }
                FnArg::Typed(typed) => {
                    let (ident, display) = match &*typed.pat {
                        Pat::Ident(pat) if pat.subpat.is_none() => {
                            (pat.ident.clone(), format!("`{}`", pat.ident))
                        }
                        _ => (format_ident!("__arg{}", index), format!("#{}", index + 1)),
                    };
                    let ty = (*typed.ty).clone();
                    if let Some((span, problem)) = problem(&ty) {
                        match problem {
                            Problem::ImplTrait => errors.push(
                                span,
                                format!(
                                    "argument {display} has an `impl Trait` type, which makes \
                                     `{name}` generic; a #[coalesce] fn needs concrete types"
                                ),
                            ),
                            Problem::Borrowed if options.key.is_none() => errors.push(
                                span,
                                format!(
                                    "argument {display} is borrowed, but #[coalesce] keys each \
                                     call by its arguments, owned, for as long as the call is in \
                                     flight; take an owned type (`String`, not `&str`), or give \
                                     the key yourself: `#[coalesce(key: <Type> = <expression over \
                                     the arguments>)]`"
                                ),
                            ),
                            Problem::Borrowed if options.detached.is_some() => errors.push(
                                span,
                                format!(
                                    "argument {display} is borrowed, but `detached` work is \
                                     spawned and outlives its caller; take an owned type"
                                ),
                            ),
                            Problem::SelfType if options.key.is_none() => errors.push(
                                span,
                                format!(
                                    "argument {display} names `Self`, which the function's \
                                     `static` group can't; write the type out"
                                ),
                            ),
                            Problem::Borrowed | Problem::SelfType => {}
                        }
                    }
                    args.push(Arg { ident, display, ty });
                }
            }
        }

        match (&receiver, options.shared) {
            (Some(receiver), None) if options.key.is_none() => {
                errors.push(receiver.span(), no_sharing_choice(name));
            }
            (None, Some(span)) => errors.push(
                span,
                format!(
                    "`shared` is for methods: it says that calls on every instance share a \
                     result, and `{name}` has no `self`; drop it (its calls share whenever \
                     their keys are equal)"
                ),
            ),
            _ => {}
        }

        if let (Some(_), Some(key)) = (&options.reuse, &options.key) {
            if let Some(span) = address(key.expr.to_token_stream()) {
                errors.push(span, reused_address(name, receiver.is_some()));
            }
        }

        let output = match &sig.output {
            ReturnType::Default => Output::Value(Box::new(syn::parse_quote!(()))),
            ReturnType::Type(_, ty) => {
                if let Some((span, problem)) = problem(ty) {
                    errors.push(
                        span,
                        match problem {
                            Problem::Borrowed => {
                                "a #[coalesce] fn can't return borrowed data: every caller \
                                 receives a clone of one value, which outlives the call that \
                                 made it; return an owned type (or an `Arc`)"
                            }
                            Problem::SelfType => {
                                "the return type names `Self`, which the function's `static` \
                                 group can't; write the type out"
                            }
                            Problem::ImplTrait => {
                                "a #[coalesce] fn can't return `impl Trait`: every caller \
                                 receives a clone of the value, so its type must be named"
                            }
                        },
                    );
                }
                match result_types(ty) {
                    ResultTypes::Both(ok, err) => Output::Fallible { ok, err },
                    ResultTypes::Alias => {
                        errors.push(
                            ty.span(),
                            "#[coalesce] shares the work's error with every caller, so it must \
                             see the error type: write `Result<T, E>` in full (for example \
                             `Result<T, std::io::Error>` instead of `io::Result<T>`)",
                        );
                        Output::Value(ty.clone())
                    }
                    ResultTypes::NotResult => Output::Value(ty.clone()),
                }
            }
        };

        if let Some(span) = options.detached {
            if !front_end.is_async() {
                errors.push(
                    span,
                    "`detached` spawns the work on an async runtime; a blocking call already runs \
                     its work to the end on the leader's thread",
                );
            }
        }
        if let Some(policy) = &options.leader_drop {
            if !front_end.is_async() {
                errors.push(
                    policy.span(),
                    "`leader_drop` is for async front-ends: a blocking leader can't be dropped \
                     before its work finishes",
                );
            }
        }

        errors.finish()?;
        Ok(Self {
            receiver,
            args,
            output,
        })
    }
}

/// Why a method needs a sharing choice, and the two ways to make it.
fn no_sharing_choice(name: &Ident) -> String {
    format!(
        "#[coalesce] on the method `{name}` must say whose calls may share a result: the \
         arguments alone don't say whose call it is, so calls on two instances with equal \
         arguments would receive one execution's result, even when the instances act for \
         different users.\n\
         Choose one:\n\
         - every instance shares, right for interchangeable clients of one service:\n      \
         #[coalesce(shared)]\n\
         - calls share only when they act for the same principal (a user's token, a tenant): \
         name it in the key, beside the arguments, e.g.\n      \
         #[coalesce(key: (String, String) = (self.token.clone(), endpoint.clone()))]"
    )
}

/// Why a reuse window refuses a key made from an address, and what to key by instead.
fn reused_address(name: &Ident, method: bool) -> String {
    let (whose, example) = if method {
        (
            "the instance",
            "#[coalesce(reuse = .., key: (u64, String) = (self.id, endpoint.clone()))]",
        )
    } else {
        (
            "the value it points at",
            "#[coalesce(reuse = .., key: u64 = session.id)]",
        )
    };
    format!(
        "the key of `{name}` is made from an address, and `reuse` hands a result to later calls \
         with an equal key after its flight has ended: by then {whose} may be gone and another \
         one live at the same address, which would receive the old one's result. An address is \
         an identity only while its value lives, and a reuse window outlives it.\n\
         Key by something that is never reused: what the result depends on (the principal's \
         token, a tenant id), or an id given out once, from a counter, when the value is made, \
         e.g.\n      \
         {example}"
    )
}

/// The first token of `tokens` (a key expression) that makes an address of something: a
/// cast to a raw pointer (`as *const`), a raw borrow (`&raw const`), `addr_of!`, a
/// pointer from a smart pointer or a reference (`Arc::as_ptr`, `ptr::from_ref`,
/// `NonNull::from`, `into_raw`), or `{:p}` in a format string. A token walk reads the
/// spellings an expression can show; a helper function that computes an address out of
/// sight is not seen.
fn address(tokens: TokenStream) -> Option<Span> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let punct = |at: usize, c: char| matches!(tokens.get(at), Some(TokenTree::Punct(p)) if p.as_char() == c);
    let ident =
        |at: usize, name: &str| matches!(tokens.get(at), Some(TokenTree::Ident(i)) if i == name);
    for (index, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Group(group) => {
                if let Some(found) = address(group.stream()) {
                    return Some(found);
                }
            }
            TokenTree::Ident(i) if i == "as" && punct(index + 1, '*') => return Some(i.span()),
            TokenTree::Punct(p) if p.as_char() == '&' && ident(index + 1, "raw") => {
                return Some(p.span());
            }
            TokenTree::Ident(i)
                if [
                    "addr_of",
                    "addr_of_mut",
                    "as_ptr",
                    "as_mut_ptr",
                    "into_raw",
                    "NonNull",
                ]
                .iter()
                .any(|name| i == name) =>
            {
                return Some(i.span());
            }
            // `ptr::from_ref` / `ptr::from_mut`: other functions may share the name.
            TokenTree::Ident(i)
                if (i == "from_ref" || i == "from_mut")
                    && index >= 3
                    && ident(index - 3, "ptr")
                    && punct(index - 2, ':')
                    && punct(index - 1, ':') =>
            {
                return Some(i.span());
            }
            TokenTree::Literal(literal) if formats_a_pointer(&literal.to_string()) => {
                return Some(literal.span());
            }
            _ => {}
        }
    }
    None
}

/// Whether a literal (as written, quotes included) is a format string with a `{:p}`
/// placeholder (any argument, flags or width: `{0:p}`, `{self:#p}`).
fn formats_a_pointer(literal: &str) -> bool {
    if !literal.ends_with('"') {
        return false;
    }
    let mut rest = literal;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        if rest.starts_with('{') {
            // `{{`: an escaped brace.
            rest = &rest[1..];
            continue;
        }
        let Some(close) = rest.find('}') else {
            return false;
        };
        let placeholder = &rest[..close];
        if placeholder.contains(':') && placeholder.ends_with('p') {
            return true;
        }
        rest = &rest[close + 1..];
    }
    false
}

fn borrows_self(receiver: &Receiver) -> bool {
    receiver.reference.is_some() || matches!(&*receiver.ty, Type::Reference(_))
}

enum Problem {
    /// A reference or lifetime other than `'static`.
    Borrowed,
    /// `Self`, which a `static` can't name.
    SelfType,
    /// `impl Trait`.
    ImplTrait,
}

/// The first thing in `ty` that keeps it out of a `static` group.
fn problem(ty: &Type) -> Option<(Span, Problem)> {
    walk(ty.to_token_stream())
}

fn walk(tokens: TokenStream) -> Option<(Span, Problem)> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let is_static = |at: usize| {
        matches!(tokens.get(at), Some(TokenTree::Punct(p)) if p.as_char() == '\'')
            && matches!(tokens.get(at + 1), Some(TokenTree::Ident(i)) if i == "static")
    };
    let mut index = 0;
    while index < tokens.len() {
        match &tokens[index] {
            TokenTree::Group(group) => {
                if let Some(found) = walk(group.stream()) {
                    return Some(found);
                }
            }
            TokenTree::Ident(ident) if ident == "Self" => {
                return Some((ident.span(), Problem::SelfType));
            }
            TokenTree::Ident(ident) if ident == "impl" => {
                return Some((ident.span(), Problem::ImplTrait));
            }
            TokenTree::Punct(punct) if punct.as_char() == '&' => {
                if !is_static(index + 1) {
                    return Some((punct.span(), Problem::Borrowed));
                }
                index += 2;
            }
            TokenTree::Punct(punct) if punct.as_char() == '\'' => {
                if !is_static(index) {
                    return Some((punct.span(), Problem::Borrowed));
                }
                index += 1;
            }
            _ => {}
        }
        index += 1;
    }
    None
}

enum ResultTypes {
    Both(Box<Type>, Box<Type>),
    /// `Result<T>`: an alias that hides the error type.
    Alias,
    NotResult,
}

/// Recognises `Result<V, E>` (any path ending in `Result`) by its last segment.
fn result_types(ty: &Type) -> ResultTypes {
    let Type::Path(path) = ty else {
        return ResultTypes::NotResult;
    };
    let Some(last) = path.path.segments.last() else {
        return ResultTypes::NotResult;
    };
    if last.ident != "Result" {
        return ResultTypes::NotResult;
    }
    let PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return ResultTypes::NotResult;
    };
    let types: Vec<&Type> = arguments
        .args
        .iter()
        .filter_map(|argument| match argument {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [ok, err] => ResultTypes::Both(Box::new((*ok).clone()), Box::new((*err).clone())),
        [_] => ResultTypes::Alias,
        _ => ResultTypes::NotResult,
    }
}

#[cfg(test)]
mod tests {
    use quote::ToTokens;

    use super::{address, formats_a_pointer};

    fn finds_address(expr: &str) -> bool {
        let expr: syn::Expr = syn::parse_str(expr).expect("a valid expression");
        address(expr.to_token_stream()).is_some()
    }

    #[test]
    fn every_spelling_of_an_address_is_found() {
        for expr in [
            "self as *const Self as usize",
            "(id.clone(), self as *mut Self as usize)",
            "&raw const *self as usize",
            "std::ptr::addr_of!(*self) as usize",
            "core::ptr::addr_of_mut!(self.state) as usize",
            "Arc::as_ptr(&self) as usize",
            "self.name.as_ptr() as usize",
            "Arc::into_raw(self.clone()) as usize",
            "NonNull::from(self)",
            "std::ptr::from_ref(self).addr()",
            "format!(\"{:p}\", self)",
            "format!(\"{0:#p}/{1}\", self, id)",
            "format!(\"{self:p}\")",
        ] {
            assert!(finds_address(expr), "{expr}");
        }
    }

    #[test]
    fn keys_that_are_not_addresses_pass() {
        for expr in [
            "(self.token.clone(), endpoint.clone())",
            "self.addr",
            "self.id as u64",
            "*user_id",
            "format!(\"user:{user_id}\")",
            "format!(\"{:?}/{p}\", self.kind)",
            "format!(\"{{:p}} {}\", id)",
            "convert::from_ref(id)",
            "|user_id, _| format!(\"{user_id}\")",
        ] {
            assert!(!finds_address(expr), "{expr}");
        }
    }

    #[test]
    fn only_string_literals_format() {
        assert!(formats_a_pointer("\"{:p}\""));
        assert!(!formats_a_pointer("'p'"));
        assert!(!formats_a_pointer("\"{:p\""));
    }
}
