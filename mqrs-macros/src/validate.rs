//! Every rule a handler must follow, each violation a `syn::Error` spanned on the offending
//! tokens; all violations are reported together.

use syn::spanned::Spanned;
use syn::{FnArg, Pat, ReturnType, Type};

use crate::model::{Handler, Module};

/// True when `ty` names `Session` (any path ending in `Session`, no generics).
pub fn is_session(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => {
            p.qself.is_none()
                && p.path.segments.last().is_some_and(|s| {
                    s.ident == "Session" && matches!(s.arguments, syn::PathArguments::None)
                })
        }
        Type::Group(g) => is_session(&g.elem),
        _ => false,
    }
}

/// `Some(by_ref)` when the argument type is `Session` or `&Session`.
pub fn session_kind(ty: &Type) -> Option<bool> {
    match ty {
        Type::Reference(r) if r.mutability.is_none() && is_session(&r.elem) => Some(true),
        t if is_session(t) => Some(false),
        _ => None,
    }
}

/// Checks the module and all its handlers.
pub fn check(m: &Module) -> syn::Result<()> {
    let mut errors: Vec<syn::Error> = Vec::new();
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
        check_handler(h, &mut errors);
        if m.handlers[..i].iter().any(|o| o.name == h.name) {
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

fn check_handler(h: &Handler, errors: &mut Vec<syn::Error>) {
    let sig = &h.func.sig;
    if h.name.is_empty() || h.name.contains(['/', '+', '#']) {
        errors.push(syn::Error::new(
            h.attr_span,
            "handler name must be non-empty and contain none of / + #",
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
    let mut typed = h.typed_args();
    match typed.next() {
        Some(first) if session_kind(&first.ty).is_some() => check_pattern(&first.pat, errors),
        Some(first) => errors.push(syn::Error::new(
            first.span(),
            format!(
                "the first argument of an #[rpc] handler must be `Session` or `&Session`, found `{}`",
                quote::ToTokens::to_token_stream(&*first.ty)
            ),
        )),
        None => errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            "an #[rpc] handler needs `session: Session` (or `&Session`) after `&self`",
        )),
    }
    for arg in typed {
        check_pattern(&arg.pat, errors);
        if let Type::Reference(r) = &*arg.ty {
            errors.push(syn::Error::new(
                r.span(),
                "#[rpc] arguments must be owned types (they are decoded from JSON): use e.g. `String` for `&str`",
            ));
        }
        if matches!(&*arg.ty, Type::ImplTrait(_)) {
            errors.push(syn::Error::new(
                arg.ty.span(),
                "#[rpc] arguments need a concrete type that implements Deserialize",
            ));
        }
    }
    match &sig.output {
        ReturnType::Default => errors.push(syn::Error::new(
            sig.paren_token.span.close(),
            "#[rpc] handlers return `Result<T, E>` with T: Serialize and E: Display",
        )),
        ReturnType::Type(_, ty) if plainly_not_result(ty) => errors.push(syn::Error::new(
            ty.span(),
            format!(
                "#[rpc] handlers return `Result<T, E>` with T: Serialize and E: Display, found `{}`",
                quote::ToTokens::to_token_stream(&**ty)
            ),
        )),
        ReturnType::Type(..) => {}
    }
}

/// True for return types that cannot be a `Result` alias: tuples, references, and paths with
/// neither generic arguments nor `Result` in their name. Anything else is left to the compiler.
fn plainly_not_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| {
            matches!(s.arguments, syn::PathArguments::None)
                && !s.ident.to_string().contains("Result")
        }),
        Type::Tuple(_) | Type::Reference(_) | Type::Array(_) | Type::Slice(_) => true,
        _ => false,
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
        let m = Module::parse(quote!(), syn::parse2(item).expect("item")).expect("model");
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
        assert!(e[2].contains("`&self`"));
        assert!(e[3].contains("found `String`"));
        assert!(e[4].contains("found `& mut Session`"), "{}", e[4]);
    }
}
