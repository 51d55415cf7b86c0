//! The expansion: the function as callers see it, the original body as a hidden work
//! function, and the group accessor that owns the function's `static` group.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, FnArg, Ident, ItemFn, Pat, PatIdent, Type, Visibility};

use crate::front_end::FrontEnd;
use crate::options::Options;
use crate::signature::{Output, Signature};

/// Expands `#[coalesce(attr)] item` for `front_end`. On error, the original function is
/// emitted beside the errors, so that its callers don't add errors of their own.
pub(crate) fn coalesce(front_end: FrontEnd, attr: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                Span::call_site(),
                "#[coalesce] goes on a function with a body",
            );
            let error = error.to_compile_error();
            return quote!(#error #item);
        }
    };
    let expanded = syn::parse2::<Options>(attr)
        .and_then(|options| Ok((Signature::read(front_end, &function, &options)?, options)))
        .map(|(signature, options)| expand(front_end, &function, &signature, &options));
    match expanded {
        Ok(tokens) => tokens,
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#error #function)
        }
    }
}

fn expand(
    front_end: FrontEnd,
    function: &ItemFn,
    signature: &Signature,
    options: &Options,
) -> TokenStream {
    let krate = match &options.krate {
        Some(path) => quote!(#path),
        None => {
            let name = Ident::new(front_end.crate_name(), Span::call_site());
            quote!(::#name)
        }
    };
    let private = quote!(#krate::__private);
    let name = &function.sig.ident;
    let vis = &function.vis;
    let accessor = options
        .group
        .clone()
        .unwrap_or_else(|| format_ident!("{}_group", name.unraw(), span = name.span()));
    let work = format_ident!("__coalesce_{}", name.unraw(), span = name.span());
    let in_impl = signature.receiver.is_some() || options.in_impl;
    let (accessor_path, work_path) = if in_impl {
        (quote!(Self::#accessor), quote!(Self::#work))
    } else {
        (quote!(#accessor), quote!(#work))
    };

    // Attributes: `cfg`s go on every generated item, lint levels on the function and its
    // work, everything else (docs, `must_use`, ...) on the function callers see.
    let cfgs: Vec<&Attribute> = function
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect();
    let lints: Vec<&Attribute> = function
        .attrs
        .iter()
        .filter(|a| {
            ["allow", "warn", "deny", "forbid", "expect"]
                .iter()
                .any(|lint| a.path().is_ident(lint))
        })
        .collect();
    let outer_attrs: Vec<&Attribute> = function
        .attrs
        .iter()
        .filter(|a| !a.path().is_ident("cfg"))
        .collect();

    // The key: its type (it names the static group) and the expression computing it.
    let arg_idents: Vec<&Ident> = signature.args.iter().map(|arg| &arg.ident).collect();
    let arg_types: Vec<&Type> = signature.args.iter().map(|arg| &arg.ty).collect();
    let mut checks = Vec::new();
    let (key_ty, key_expr) = match &options.key {
        None => {
            for arg in &signature.args {
                checks.push(key_argument_check(name, &arg.ident, &arg.display, &arg.ty));
            }
            match signature.args.as_slice() {
                [] => (quote!(()), quote!(())),
                [arg] => {
                    let (ident, ty) = (&arg.ident, &arg.ty);
                    (quote!(#ty), quote!(::core::clone::Clone::clone(&#ident)))
                }
                args => {
                    let clones = args.iter().map(|arg| {
                        let ident = &arg.ident;
                        quote!(::core::clone::Clone::clone(&#ident))
                    });
                    (quote!((#(#arg_types,)*)), quote!((#(#clones,)*)))
                }
            }
        }
        Some(key) => {
            let ty = &key.ty;
            checks.push(key_type_check(name, ty));
            let expr = &key.expr;
            let value = if let Expr::Closure(_) = expr {
                // The closure receives a shared reference to each argument; the `dyn Fn`
                // annotation gives its parameters their types.
                quote_spanned! {expr.span()=> {
                    let __key_fn: &dyn ::core::ops::Fn(#(&#arg_types),*) -> #ty = &(#expr);
                    __key_fn(#(&#arg_idents),*)
                }}
            } else {
                // The expression sees each argument as a shared reference, and `self`.
                quote! {{
                    #(
                        #[allow(unused_variables, clippy::needless_borrow)]
                        let #arg_idents = &#arg_idents;
                    )*
                    #expr
                }}
            };
            (quote!(#ty), value)
        }
    };

    // What the work returns, what the group shares, and what callers get.
    let (value_ty, caller_output, fallible) = match &signature.output {
        Output::Value(ty) => {
            checks.push(value_check(name, ty, "value"));
            (
                quote!(#ty),
                quote!(::core::result::Result<#ty, #private::Error>),
                false,
            )
        }
        Output::Fallible { ok, err } => {
            checks.push(value_check(name, ok, "value"));
            checks.push(value_check(name, err, "error"));
            (
                quote!(::core::result::Result<#ok, #err>),
                quote!(::core::result::Result<#ok, #private::Error<#err>>),
                true,
            )
        }
    };

    // The call itself.
    let self_arg = signature.receiver.as_ref().map(|_| quote!(self,));
    let run = quote!(move || #work_path(#self_arg #(#arg_idents),*));
    let call = if front_end.is_async() {
        let method = match (fallible, options.detached.is_some()) {
            (false, false) => quote!(call),
            (true, false) => quote!(try_call),
            (false, true) => quote!(call_detached),
            (true, true) => quote!(try_call_detached),
        };
        match &options.timeout {
            None => quote!(__group.#method(&__key, #run).await),
            Some(timeout) => quote! {
                __group.timeout(#timeout, __group.#method(&__key, #run)).await
            },
        }
    } else {
        match (fallible, &options.timeout) {
            (false, None) => quote!(__group.call(&__key, #run)),
            (true, None) => quote!(__group.try_call(&__key, #run)),
            (false, Some(timeout)) => quote!(__group.call_timeout(&__key, #timeout, #run)),
            (true, Some(timeout)) => quote!(__group.try_call_timeout(&__key, #timeout, #run)),
        }
    };

    // The function callers see: same name, visibility and arguments; the result wrapped.
    let mut outer_sig = function.sig.clone();
    outer_sig.output = syn::parse_quote!(-> #caller_output);
    for (input, arg) in outer_sig
        .inputs
        .iter_mut()
        .filter_map(|input| match input {
            FnArg::Typed(typed) => Some(typed),
            FnArg::Receiver(_) => None,
        })
        .zip(&signature.args)
    {
        *input.pat = Pat::Ident(PatIdent {
            attrs: Vec::new(),
            by_ref: None,
            mutability: None,
            ident: arg.ident.clone(),
            subpat: None,
        });
    }
    for input in &mut outer_sig.inputs {
        if let FnArg::Receiver(receiver) = input {
            if receiver.reference.is_none() {
                receiver.mutability = None;
            }
        }
    }

    // The original body, under a hidden name, with its own signature.
    let mut work_sig = function.sig.clone();
    work_sig.ident = work.clone();
    let body = &function.block;

    // The group: one `static` per expansion, inside the accessor, so that no two functions
    // ever share one, whatever their names.
    let observer = options.observer.as_ref().map(|observer| {
        quote_spanned! {observer.span()=>
            let __observer: #private::Arc<dyn #private::Observer> = #observer;
            let __group = __group.with_observer(__observer);
        }
    });
    let leader_drop = options.leader_drop.as_ref().map(|policy| {
        quote!(let __group = __group.with_leader_drop_policy(#private::LeaderDropPolicy::#policy);)
    });
    let shards = options.shards.as_ref().map(|shards| {
        quote_spanned! {shards.span()=>
            let __group = __group.with_shards(#shards);
        }
    });
    let reuse = options.reuse.as_ref().map(|window| {
        quote_spanned! {window.span()=>
            let __group = __group.reuse_for(#window);
        }
    });
    let group_ty = quote!(#private::Group<#key_ty, #value_ty>);
    let accessor_doc = format!(
        " The group that coalesces the calls of `{name}` (generated by `#[coalesce]`): \
         forget a key or every key, count a key's waiters, count flights in progress."
    );

    let vis_accessor: &Visibility = vis;
    quote! {
        #(#outer_attrs)*
        #(#cfgs)*
        #vis #outer_sig {
            #(#checks)*
            let __key: #key_ty = #key_expr;
            let __group = #accessor_path();
            #call
        }

        #(#cfgs)*
        #[doc = #accessor_doc]
        #[allow(clippy::type_complexity)]
        #vis_accessor fn #accessor() -> &'static #group_ty {
            static GROUP: #private::LazyLock<#group_ty> = #private::LazyLock::new(|| {
                let __group = <#group_ty>::new();
                #shards
                #reuse
                #observer
                #leader_drop
                __group
            });
            &GROUP
        }

        #(#cfgs)*
        #(#lints)*
        #[doc(hidden)]
        #[allow(clippy::too_many_arguments)]
        #work_sig #body
    }
}

/// Asserts, at the argument, that it can be part of the automatic key; the message names
/// the argument and the fix.
fn key_argument_check(function: &Ident, ident: &Ident, display: &str, ty: &Type) -> TokenStream {
    let message = format!(
        "argument {display} of `{function}` can't be part of its coalescing key: `{{Self}}` is \
         not `Hash + Eq + Clone`"
    );
    let label = format!("argument {display} is part of the key");
    let note = "#[coalesce] keys each call by its arguments (cloned), to find the call in flight \
                with equal arguments";
    let fix = "derive `Clone, PartialEq, Eq, Hash` for the type, or give the key yourself: \
               `#[coalesce(key: <Type> = <expression over the arguments>)]`";
    let span = ty.span();
    quote_spanned! {span=> {
        #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note, note = #fix)]
        trait CoalesceKey {}
        impl<T: ?::core::marker::Sized + ::core::hash::Hash + ::core::cmp::Eq + ::core::clone::Clone>
            CoalesceKey for T {}
        fn check<T: ?::core::marker::Sized + CoalesceKey>(_: &T) {}
        check(&#ident);
    }}
}

/// Asserts that a custom key's type is `Hash + Eq + Clone`.
fn key_type_check(function: &Ident, ty: &Type) -> TokenStream {
    let message = format!(
        "the key of `{function}` can't be `{{Self}}`: a coalescing key must be `Hash + Eq + Clone`"
    );
    let note = "calls with equal keys share one execution; the key is cloned into the group while \
                its call is in flight";
    type_check(
        ty,
        &message,
        "the key's type",
        note,
        "CoalesceKeyType",
        quote! {
            ::core::hash::Hash + ::core::cmp::Eq + ::core::clone::Clone
        },
    )
}

/// Asserts that what the work returns can be cloned for every caller.
fn value_check(function: &Ident, ty: &Type, what: &str) -> TokenStream {
    let message = format!(
        "`{function}` returns a `{{Self}}` {what}, which is not `Clone`, but every caller of a \
         coalesced call receives a clone of it"
    );
    let note = "derive or implement `Clone`, or wrap it in an `Arc`";
    type_check(
        ty,
        &message,
        "not `Clone`",
        note,
        "CoalesceValue",
        quote!(::core::clone::Clone),
    )
}

fn type_check(
    ty: &Type,
    message: &str,
    label: &str,
    note: &str,
    trait_name: &str,
    bounds: TokenStream,
) -> TokenStream {
    let trait_name = Ident::new(trait_name, Span::call_site());
    let span = ty.span();
    quote_spanned! {span=> {
        #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
        trait #trait_name {}
        impl<T: ?::core::marker::Sized + #bounds> #trait_name for T {}
        fn check<T: ?::core::marker::Sized + #trait_name>() {}
        check::<#ty>();
    }}
}
