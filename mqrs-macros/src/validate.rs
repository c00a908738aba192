//! Every rule a handler must follow, each violation a `syn::Error` spanned on the offending
//! tokens; all violations are reported together.

use quote::ToTokens;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, Pat, ReturnType, Type};

use crate::model::{Handler, Module, SessionKind};

/// Why handlers take a `Session` and how to add one: the `help:` of both session errors.
const SESSION_HELP: &str = "help: a call's trace context and user travel in its `Session`: \
     add `session: Session` (or `session: &Session`) right after `&self`";

/// Rust names of handlers that the generated client's own items would clash with or hide:
/// its constructor and the methods of its derived `Clone`.
pub const CLIENT_ITEMS: [&str; 3] = ["new", "clone", "clone_from"];

/// Checks the module and all its handlers.
pub fn check(m: &Module) -> syn::Result<()> {
    let mut errors: Vec<syn::Error> = m.errors.clone();
    let item = &m.item;
    if let Some((_, path, _)) = &item.trait_ {
        errors.push(syn::Error::new(
            path.span(),
            "#[rpc_module] goes on an inherent impl block, not a trait impl",
        ));
    }
    if !item.generics.params.is_empty() {
        errors.push(syn::Error::new(
            item.generics.span(),
            "#[rpc_module] does not support generic modules",
        ));
    }
    if m.name.is_empty() || m.name.contains(['/', '@', '+', '#']) {
        errors.push(syn::Error::new(
            item.self_ty.span(),
            "module name must be non-empty and contain none of / @ + #",
        ));
    }
    for (i, h) in m.handlers.iter().enumerate() {
        check_handler(m, h, &mut errors);
        // Handlers under different `#[cfg]`s may share a name: at most one of them is built.
        let cfgs = |h: &Handler| {
            h.cfgs
                .iter()
                .map(|a| a.to_token_stream().to_string())
                .collect::<Vec<_>>()
        };
        if m.handlers[..i]
            .iter()
            .any(|o| o.name == h.name && cfgs(o) == cfgs(h))
        {
            errors.push(syn::Error::new(
                h.func.sig.ident.span(),
                format!("a handler named `{}` already exists in this module", h.name),
            ));
        }
    }
    match errors.into_iter().reduce(|mut a, b| {
        a.combine(b);
        a
    }) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn check_handler(m: &Module, h: &Handler, errors: &mut Vec<syn::Error>) {
    let sig = &h.func.sig;
    if h.name.is_empty() || h.name.contains(['/', '+', '#']) {
        errors.push(syn::Error::new(
            h.attr_span,
            "handler name must be non-empty and contain none of / + #",
        ));
    }
    let rust_name = sig.ident.unraw().to_string();
    if CLIENT_ITEMS.contains(&rust_name.as_str()) {
        let client = format!("{}Client", m.type_ident);
        let clash = if rust_name == "new" {
            format!("`{client}::new` is the constructor of the generated client")
        } else {
            format!("it would hide `Clone::{rust_name}` of the generated `{client}`")
        };
        errors.push(syn::Error::new(
            sig.ident.span(),
            format!(
                "an #[rpc] handler cannot be named `{rust_name}`: {clash}\n\
                 help: rename the method and keep the route with `#[rpc(name = \"{}\")]`, \
                 e.g. `#[rpc(name = \"{}\")] async fn {rust_name}_handler(..)`",
                h.name, h.name
            ),
        ));
    }
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span(),
            "#[rpc] handlers must be `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new(
            sig.generics.span(),
            "#[rpc] handlers cannot be generic: their arguments are decoded from JSON",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new(
            v.span(),
            "#[rpc] handlers cannot be variadic",
        ));
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(FnArg::Receiver(r)) => errors.push(syn::Error::new(
            r.span(),
            "#[rpc] handlers take `&self`: the module is shared by concurrent calls",
        )),
        _ => errors.push(syn::Error::new(
            sig.ident.span(),
            "#[rpc] handlers are methods: the first parameter must be `&self`",
        )),
    }
    match (&h.session, h.args.first()) {
        (Some(s), _) if s.kind == SessionKind::RefMut => errors.push(syn::Error::new(
            s.pat.span(),
            "the first argument of an #[rpc] handler must be `Session` or `&Session`, found `&mut Session`\n\
             help: take it by value to change it: `mut session: Session`",
        )),
        (Some(s), _) => check_pattern(&s.pat, errors),
        (None, Some(first)) => errors.push(syn::Error::new(
            first.pat.span(),
            format!(
                "the first argument of an #[rpc] handler must be `Session` or `&Session`, found `{}`\n{SESSION_HELP}",
                first.ty.to_token_stream()
            ),
        )),
        (None, None) => errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            format!("an #[rpc] handler needs a `Session` argument after `&self`\n{SESSION_HELP}"),
        )),
    }
    for arg in &h.args {
        check_pattern(&arg.pat, errors);
        if let Type::Reference(r) = &arg.ty {
            errors.push(syn::Error::new(
                r.span(),
                "#[rpc] arguments must be owned types (they are decoded from JSON): use e.g. `String` for `&str`",
            ));
        }
        if matches!(&arg.ty, Type::ImplTrait(_)) {
            errors.push(syn::Error::new(
                arg.ty.span(),
                "#[rpc] arguments need a concrete type that implements Deserialize",
            ));
        }
    }
    if h.ok.is_none() {
        errors.push(match &sig.output {
            ReturnType::Default => syn::Error::new(
                sig.paren_token.span.close(),
                "#[rpc] handlers return `Result<T, E>` with T: Serialize and E: Display",
            ),
            ReturnType::Type(_, ty) => syn::Error::new(
                ty.span(),
                format!(
                    "#[rpc] handlers return `Result<T, E>` with T: Serialize and E: Display, found `{}`",
                    ty.to_token_stream()
                ),
            ),
        });
    }
}

fn check_pattern(pat: &Pat, errors: &mut Vec<syn::Error>) {
    match pat {
        Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {}
        Pat::Wild(_) => {}
        other => errors.push(syn::Error::new(
            other.span(),
            "unsupported argument pattern in an #[rpc] handler: use a plain name such as `msg`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn errors(item: proc_macro2::TokenStream) -> Vec<String> {
        let m = match Module::parse(quote!(), syn::parse2(item).expect("item")) {
            Ok(m) => m,
            Err(u) => panic!("refused: {}", u.error),
        };
        match check(&m) {
            Ok(()) => vec![],
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn accepts_session_by_value_and_by_reference() {
        assert!(errors(quote! {
            impl M {
                #[rpc] async fn a(&self, s: Session) -> Result<(), String> { Ok(()) }
                #[rpc] async fn b(&self, s: &mqrs_runtime::Session, x: i32) -> Reply<u8> { Ok(1) }
            }
        })
        .is_empty());
    }

    #[test]
    fn reports_every_violation_at_once() {
        let e = errors(quote! {
            impl M {
                #[rpc] fn a(&self, s: String) -> Result<(), String> { Ok(()) }
                #[rpc] async fn b(&mut self, s: Session) -> String { String::new() }
                #[rpc] async fn c(&self, s: &mut Session) -> Result<(), String> { Ok(()) }
            }
        });
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(e[0].contains("async fn"));
        assert!(e[1].contains("must be `Session` or `&Session`, found `String`"));
        assert!(e[1].contains("\nhelp: a call's trace context"), "{}", e[1]);
        assert!(e[2].contains("`&self`"));
        assert!(e[3].contains("found `String`"));
        assert!(
            e[4].contains("found `&mut Session`\nhelp: take it by value"),
            "{}",
            e[4]
        );
    }

    #[test]
    fn missing_session_says_why_and_how() {
        let e = errors(quote! {
            impl M { #[rpc] async fn a(&self) -> Result<(), String> { Ok(()) } }
        });
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].starts_with("an #[rpc] handler needs a `Session` argument after `&self`\nhelp: ")
        );
        assert!(e[0].contains("add `session: Session` (or `session: &Session`)"));
    }

    #[test]
    fn refuses_names_of_client_items() {
        let e = errors(quote! {
            impl M {
                #[rpc] async fn new(&self, s: Session) -> Result<(), String> { Ok(()) }
                #[rpc(name = "copy")] async fn clone(&self, s: Session) -> Result<(), String> { Ok(()) }
                #[rpc] async fn r#clone_from(&self, s: Session) -> Result<(), String> { Ok(()) }
            }
        });
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].starts_with(
            "an #[rpc] handler cannot be named `new`: `MClient::new` is the constructor"
        ));
        assert!(e[0]
            .contains("help: rename the method and keep the route with `#[rpc(name = \"new\")]`"));
        assert!(e[1].contains("hide `Clone::clone` of the generated `MClient`"));
        assert!(
            e[1].contains("#[rpc(name = \"copy\")]"),
            "the route already chosen"
        );
        assert!(e[2].contains("`clone_from`"));
        // The route may keep the name.
        assert!(errors(quote! {
            impl M {
                #[rpc(name = "new")] async fn create(&self, s: Session) -> Result<(), String> { Ok(()) }
                #[rpc(name = "clone")] async fn copy(&self, s: Session) -> Result<(), String> { Ok(()) }
            }
        })
        .is_empty());
    }

    #[test]
    fn duplicate_names_only_under_the_same_cfgs() {
        let e = errors(quote! {
            impl M {
                #[rpc] #[cfg(unix)] async fn a(&self, s: Session) -> Result<(), String> { Ok(()) }
                #[rpc] #[cfg(not(unix))] async fn a(&self, s: Session) -> Result<(), String> { Ok(()) }
                #[rpc(name = "a")] #[cfg(unix)] async fn b(&self, s: Session) -> Result<(), String> { Ok(()) }
            }
        });
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("a handler named `a` already exists"));
    }
}
